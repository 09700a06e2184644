//! ONNX models and graphs as plain Rust values: reading a `.onnx` file (size-capped, decoded and
//! checked into [`OnnxModel`]) and writing one back (for export).

use super::MAX_MODEL_BYTES;
use super::error::OnnxError;
use super::node::Node;
use super::proto::{
    self, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto::dimension, type_proto,
};
use super::tensor::{DataType, Tensor};
use prost::Message;
use prost::bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What [`OnnxError::Decode`] and [`OnnxError::TooLarge`] name for bytes given in memory.
const IN_MEMORY: &str = "(bytes in memory)";

/// An ONNX model: IR version, operator sets, producer and the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxModel {
    /// ONNX IR version (`ir_version`; PyTorch's classic exporter writes 7 or 8).
    pub ir_version: i64,
    /// Operator sets as (domain, version), in file order; the standard set has domain `""`
    /// (some writers spell it `"ai.onnx"`). See [`OnnxModel::opset_version`].
    pub opsets: Vec<(String, i64)>,
    /// `producer_name`, e.g. `pytorch`.
    pub producer: String,
    /// `producer_version`, e.g. `2.5.0`.
    pub producer_version: String,
    /// The graph.
    pub graph: OnnxGraph,
}

/// An ONNX graph: inputs, outputs, initializers (weights) and nodes in topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxGraph {
    /// Graph name.
    pub name: String,
    /// Graph inputs. Files written for IR version < 4 (or with PyTorch's
    /// `keep_initializers_as_inputs=True`) also list initializers here:
    /// see [`OnnxGraph::runtime_inputs`].
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Named constant tensors, in file order; names are distinct and non-empty.
    /// See [`OnnxGraph::initializer`] and [`OnnxGraph::initializer_map`].
    pub initializers: Vec<(String, Tensor)>,
    /// Type and shape hints for intermediate values (`value_info`), tensor values only.
    pub value_info: Vec<ValueInfo>,
    /// Nodes, in the file's (topological) order.
    pub nodes: Vec<Node>,
}

/// Name, element type and (possibly partly symbolic) shape of a value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Element type ([`DataType::UNDEFINED`] when the file gives none).
    pub elem_type: DataType,
    /// Shape, outermost first; `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

/// One dimension of a [`ValueInfo`] shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A named size, e.g. `batch` for a dynamic batch axis.
    Symbolic(String),
    /// Neither given.
    Unknown,
}

impl OnnxModel {
    /// Reads and decodes a `.onnx` file. Files over [`MAX_MODEL_BYTES`] are refused from their
    /// size before being read.
    ///
    /// # Errors
    /// [`OnnxError::Io`], [`OnnxError::TooLarge`], and those of [`OnnxModel::decode`] (with
    /// `path` in [`OnnxError::Decode`]).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, OnnxError> {
        let path = path.as_ref();
        let io = |cause| OnnxError::Io {
            path: path.to_path_buf(),
            action: "read",
            cause,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(too_large(path.to_path_buf(), size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // The file may grow between the size check and the read: never read past the cap.
        file.take(MAX_MODEL_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let len = bytes.len() as u64;
        if len > MAX_MODEL_BYTES {
            return Err(too_large(path.to_path_buf(), len));
        }
        Self::decode_from(Bytes::from(bytes), path.to_path_buf())
    }

    /// Decodes the bytes of a `.onnx` file.
    ///
    /// # Errors
    /// [`OnnxError::TooLarge`]; [`OnnxError::Decode`] for bytes that are not a protobuf
    /// `ModelProto` (garbage, another format, a truncated file) or lack `ir_version` or
    /// `opset_import`; [`OnnxError::NoGraph`]; [`OnnxError::Tensor`], [`OnnxError::Value`] and
    /// [`OnnxError::Attribute`] for contents this crate refuses.
    pub fn decode(bytes: &[u8]) -> Result<Self, OnnxError> {
        Self::decode_from(Bytes::copy_from_slice(bytes), PathBuf::from(IN_MEMORY))
    }

    fn decode_from(bytes: Bytes, path: PathBuf) -> Result<Self, OnnxError> {
        let size = bytes.len() as u64;
        if size > MAX_MODEL_BYTES {
            return Err(too_large(path, size));
        }
        let decode_err = |reason: String| OnnxError::Decode {
            path: path.clone(),
            reason,
        };
        let m = ModelProto::decode(bytes).map_err(|e| {
            decode_err(format!(
                "not an ONNX model, or a truncated one: protobuf decoding failed ({e})"
            ))
        })?;
        if m.ir_version <= 0 {
            return Err(decode_err(
                "not an ONNX model: it has no IR version (ir_version)".to_string(),
            ));
        }
        if m.opset_import.is_empty() {
            return Err(decode_err(
                "not a complete ONNX model: it declares no operator set (opset_import, written \
                 last); the file may be truncated"
                    .to_string(),
            ));
        }
        let graph = m.graph.ok_or(OnnxError::NoGraph)?;
        Ok(OnnxModel {
            ir_version: m.ir_version,
            opsets: m
                .opset_import
                .into_iter()
                .map(|o| (o.domain, o.version))
                .collect(),
            producer: m.producer_name,
            producer_version: m.producer_version,
            graph: OnnxGraph::from_proto(graph)?,
        })
    }

    /// The version of operator set `domain`, where `""` and `"ai.onnx"` both mean the standard
    /// set; the highest if listed more than once.
    pub fn opset_version(&self, domain: &str) -> Option<i64> {
        let standard = |d: &str| d.is_empty() || d == "ai.onnx";
        self.opsets
            .iter()
            .filter(|(d, _)| d == domain || (standard(d) && standard(domain)))
            .map(|&(_, v)| v)
            .max()
    }

    /// Encodes as the bytes of a `.onnx` file: tensors in `raw_data` (little-endian),
    /// `ir_version` and opsets as given. [`OnnxModel::decode`] gives back an equal model.
    pub fn encode(&self) -> Vec<u8> {
        ModelProto {
            ir_version: self.ir_version,
            producer_name: self.producer.clone(),
            producer_version: self.producer_version.clone(),
            graph: Some(self.graph.to_proto()),
            opset_import: self
                .opsets
                .iter()
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: domain.clone(),
                    version: *version,
                })
                .collect(),
            ..ModelProto::default()
        }
        .encode_to_vec()
    }

    /// Encodes and writes a `.onnx` file (replacing an existing one).
    ///
    /// # Errors
    /// [`OnnxError::TooLarge`] when the encoding is over [`MAX_MODEL_BYTES`] (nothing is
    /// written); [`OnnxError::Io`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), OnnxError> {
        let path = path.as_ref();
        let bytes = self.encode();
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(too_large(path.to_path_buf(), bytes.len() as u64));
        }
        std::fs::write(path, bytes).map_err(|cause| OnnxError::Io {
            path: path.to_path_buf(),
            action: "write",
            cause,
        })
    }
}

fn too_large(path: PathBuf, size: u64) -> OnnxError {
    OnnxError::TooLarge {
        path,
        size,
        limit: MAX_MODEL_BYTES,
    }
}

impl OnnxGraph {
    /// The initializer called `name` (a linear search; see [`OnnxGraph::initializer_map`]).
    pub fn initializer(&self, name: &str) -> Option<&Tensor> {
        self.initializers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// All initializers by name.
    pub fn initializer_map(&self) -> HashMap<&str, &Tensor> {
        self.initializers
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .collect()
    }

    /// The graph inputs that are not initializers: the values the caller must feed.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        let inits: HashSet<&str> = self.initializers.iter().map(|(n, _)| n.as_str()).collect();
        self.inputs
            .iter()
            .filter(move |v| !inits.contains(v.name.as_str()))
    }

    fn from_proto(g: GraphProto) -> Result<Self, OnnxError> {
        if let Some(s) = g.sparse_initializer.first() {
            let name = s
                .values
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            return Err(OnnxError::Tensor {
                name,
                reason: "is a sparse initializer, which is not supported".to_string(),
            });
        }
        let mut initializers = Vec::with_capacity(g.initializer.len());
        let mut seen = HashSet::with_capacity(g.initializer.len());
        for (i, t) in g.initializer.into_iter().enumerate() {
            if t.name.is_empty() {
                return Err(OnnxError::Tensor {
                    name: format!("(initializer #{i})"),
                    reason: "an initializer must have a name".to_string(),
                });
            }
            if !seen.insert(t.name.clone()) {
                return Err(OnnxError::Tensor {
                    name: t.name,
                    reason: "two initializers have this name".to_string(),
                });
            }
            let name = t.name.clone();
            let tensor = Tensor::from_proto(t, &name)?;
            initializers.push((name, tensor));
        }
        let io = |list: Vec<ValueInfoProto>| {
            list.into_iter()
                .map(ValueInfo::from_proto)
                .collect::<Result<Vec<_>, _>>()
        };
        let mut value_info = Vec::with_capacity(g.value_info.len());
        for v in g.value_info {
            // Hints for non-tensor intermediate values are dropped.
            if let Some(v) = ValueInfo::from_proto_if_tensor(v)? {
                value_info.push(v);
            }
        }
        Ok(OnnxGraph {
            name: g.name,
            inputs: io(g.input)?,
            outputs: io(g.output)?,
            initializers,
            value_info,
            nodes: g
                .node
                .into_iter()
                .map(Node::from_proto)
                .collect::<Result<_, _>>()?,
        })
    }

    fn to_proto(&self) -> GraphProto {
        GraphProto {
            node: self.nodes.iter().map(Node::to_proto).collect(),
            name: self.name.clone(),
            initializer: self
                .initializers
                .iter()
                .map(|(name, t)| t.to_proto(name))
                .collect(),
            input: self.inputs.iter().map(ValueInfo::to_proto).collect(),
            output: self.outputs.iter().map(ValueInfo::to_proto).collect(),
            value_info: self.value_info.iter().map(ValueInfo::to_proto).collect(),
            ..GraphProto::default()
        }
    }
}

impl ValueInfo {
    /// Decodes a graph input or output, which must be a tensor.
    fn from_proto(v: ValueInfoProto) -> Result<Self, OnnxError> {
        let name = v.name.clone();
        Self::from_proto_if_tensor(v)?.ok_or_else(|| OnnxError::Value {
            name,
            reason: "is not a tensor (a sequence, map, optional, sparse or opaque value); only \
                     tensors are supported"
                .to_string(),
        })
    }

    /// Decodes a value description: `None` for a non-tensor type.
    fn from_proto_if_tensor(v: ValueInfoProto) -> Result<Option<Self>, OnnxError> {
        let tensor = match v.r#type.and_then(|t| t.value) {
            // No type at all: allowed for hints; kept as an undefined, unknown-rank tensor.
            None => type_proto::Tensor::default(),
            Some(type_proto::Value::TensorType(t)) => t,
            Some(_) => return Ok(None),
        };
        let shape = match tensor.shape {
            None => None,
            Some(s) => Some(
                s.dim
                    .into_iter()
                    .map(|d| match d.value {
                        Some(dimension::Value::DimValue(n)) => u64::try_from(n)
                            .map(Dim::Fixed)
                            .map_err(|_| OnnxError::Value {
                                name: v.name.clone(),
                                reason: format!("its shape has a negative dimension ({n})"),
                            }),
                        Some(dimension::Value::DimParam(p)) => Ok(Dim::Symbolic(p)),
                        None => Ok(Dim::Unknown),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Some(ValueInfo {
            name: v.name,
            elem_type: DataType(tensor.elem_type),
            shape,
        }))
    }

    fn to_proto(&self) -> ValueInfoProto {
        let shape = self.shape.as_ref().map(|dims| TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| proto::tensor_shape_proto::Dimension {
                    value: match d {
                        Dim::Fixed(n) => Some(dimension::Value::DimValue(
                            i64::try_from(*n).unwrap_or(i64::MAX),
                        )),
                        Dim::Symbolic(p) => Some(dimension::Value::DimParam(p.clone())),
                        Dim::Unknown => None,
                    },
                    denotation: String::new(),
                })
                .collect(),
        });
        ValueInfoProto {
            name: self.name.clone(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: self.elem_type.0,
                    shape,
                })),
                denotation: String::new(),
            }),
            doc_string: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::node::{Attribute, AttributeValue};
    use crate::onnx::tensor::TensorData;

    fn tensor(dims: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(dims, data).unwrap()
    }

    fn attr(name: &str, value: AttributeValue) -> Attribute {
        Attribute {
            name: name.to_string(),
            value,
        }
    }

    fn node(
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<Attribute>,
    ) -> Node {
        Node {
            name: name.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attributes: attrs,
        }
    }

    /// A small CNN in the shape PyTorch writes it: Constant, Conv, Relu, MaxPool, Flatten, Gemm.
    fn model() -> OnnxModel {
        let input = ValueInfo {
            name: "input".into(),
            elem_type: DataType::FLOAT,
            shape: Some(vec![
                Dim::Symbolic("batch".into()),
                Dim::Fixed(1),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ]),
        };
        let output = ValueInfo {
            name: "logits".into(),
            elem_type: DataType::FLOAT,
            shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(3)]),
        };
        let conv_w = tensor(
            vec![2, 1, 3, 3],
            TensorData::F32((0..18).map(|i| i as f32 * 0.1 - 0.9).collect()),
        );
        let nodes = vec![
            node(
                "Constant",
                "/Constant",
                &[],
                &["/Constant_output_0"],
                vec![attr(
                    "value",
                    AttributeValue::Tensor(tensor(vec![], TensorData::F32(vec![0.5]))),
                )],
            ),
            node(
                "Sub",
                "/Sub",
                &["input", "/Constant_output_0"],
                &["/Sub_output_0"],
                vec![],
            ),
            node(
                "Conv",
                "/conv/Conv",
                &["/Sub_output_0", "conv.weight", "conv.bias"],
                &["/conv/Conv_output_0"],
                vec![
                    attr("dilations", AttributeValue::Ints(vec![1, 1])),
                    attr("group", AttributeValue::Int(1)),
                    attr("kernel_shape", AttributeValue::Ints(vec![3, 3])),
                    attr("pads", AttributeValue::Ints(vec![1, 1, 1, 1])),
                    attr("strides", AttributeValue::Ints(vec![1, 1])),
                ],
            ),
            node("Relu", "", &["/conv/Conv_output_0"], &["r"], vec![]),
            node(
                "MaxPool",
                "/pool/MaxPool",
                &["r"],
                &["p"],
                vec![
                    attr("kernel_shape", AttributeValue::Ints(vec![2, 2])),
                    attr("strides", AttributeValue::Ints(vec![2, 2])),
                ],
            ),
            node(
                "Flatten",
                "/Flatten",
                &["p"],
                &["f"],
                vec![attr("axis", AttributeValue::Int(1))],
            ),
            node(
                "Gemm",
                "/fc/Gemm",
                &["f", "fc.weight", "fc.bias"],
                &["logits"],
                vec![
                    attr("alpha", AttributeValue::Float(1.0)),
                    attr("beta", AttributeValue::Float(1.0)),
                    attr("transB", AttributeValue::Int(1)),
                ],
            ),
        ];
        OnnxModel {
            ir_version: 8,
            opsets: vec![(String::new(), 13)],
            producer: "pytorch".into(),
            producer_version: "2.5.0".into(),
            graph: OnnxGraph {
                name: "main_graph".into(),
                inputs: vec![input],
                outputs: vec![output],
                initializers: vec![
                    ("conv.weight".into(), conv_w),
                    (
                        "conv.bias".into(),
                        tensor(vec![2], TensorData::F32(vec![0.0, -0.25])),
                    ),
                    (
                        "fc.weight".into(),
                        tensor(vec![3, 8], TensorData::F32(vec![0.125; 24])),
                    ),
                    (
                        "fc.bias".into(),
                        tensor(vec![3], TensorData::F64(vec![1.0, 2.0, 3.0])),
                    ),
                    (
                        "shape".into(),
                        tensor(vec![2], TensorData::I64(vec![-1, 8])),
                    ),
                    ("axes".into(), tensor(vec![1], TensorData::I32(vec![0]))),
                ],
                value_info: vec![ValueInfo {
                    name: "r".into(),
                    elem_type: DataType::FLOAT,
                    shape: Some(vec![
                        Dim::Unknown,
                        Dim::Fixed(2),
                        Dim::Fixed(4),
                        Dim::Fixed(4),
                    ]),
                }],
                nodes,
            },
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = model();
        let bytes = m.encode();
        let back = OnnxModel::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.opset_version(""), Some(13));
        assert_eq!(back.opset_version("ai.onnx"), Some(13));
        assert_eq!(back.opset_version("com.microsoft"), None);
        let g = &back.graph;
        assert_eq!(
            g.initializer("fc.weight").map(Tensor::dims),
            Some(&[3usize, 8][..])
        );
        assert_eq!(g.initializer_map().len(), 6);
        assert!(g.initializer("nope").is_none());
        assert_eq!(g.runtime_inputs().count(), 1);
    }

    #[test]
    fn initializers_listed_as_inputs_are_not_runtime_inputs() {
        let mut m = model();
        m.graph.inputs.push(ValueInfo {
            name: "conv.weight".into(),
            elem_type: DataType::FLOAT,
            shape: None,
        });
        let back = OnnxModel::decode(&m.encode()).unwrap();
        let names: Vec<&str> = back
            .graph
            .runtime_inputs()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["input"]);
    }

    #[test]
    fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("securenn-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnx");
        let m = model();
        m.write(&path).unwrap();
        assert_eq!(OnnxModel::read(&path).unwrap(), m);
        let e = OnnxModel::read(dir.join("missing.onnx")).unwrap_err();
        assert!(matches!(e, OnnxError::Io { action: "read", .. }), "{e}");
        assert!(e.to_string().contains("missing.onnx"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_truncation_is_a_decode_error() {
        let bytes = model().encode();
        for cut in 0..bytes.len() {
            match OnnxModel::decode(&bytes[..cut]) {
                Err(OnnxError::Decode { path, reason }) => {
                    assert_eq!(path, Path::new(IN_MEMORY));
                    assert!(
                        reason.contains("not an ONNX model") || reason.contains("truncated"),
                        "{reason}"
                    );
                }
                other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
            }
        }
        let e = OnnxModel::decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn garbage_gives_clear_errors_never_panics() {
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            b"hello, this is not an onnx model".to_vec(),
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            b"{\"__metadata__\":{}}".to_vec(),
            vec![0xff; 64],
            vec![0; 64],
        ];
        for s in &samples {
            let e = OnnxModel::decode(s).unwrap_err();
            assert!(matches!(e, OnnxError::Decode { .. }), "{e}");
            assert!(e.to_string().contains("not an ONNX model"), "{e}");
        }
        // Pseudo-random bytes, and a valid model with bytes flipped: errors or models, no panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1usize, 7, 100, 1000] {
            for _ in 0..50 {
                let b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let _ = OnnxModel::decode(&b);
            }
        }
        let good = model().encode();
        for _ in 0..2000 {
            let mut b = good.clone();
            let i = next() as usize % b.len();
            b[i] ^= (next() as u8) | 1;
            let _ = OnnxModel::decode(&b);
        }
    }

    #[test]
    fn missing_graph_ir_version_or_opset() {
        let mut p = ModelProto::decode(Bytes::from(model().encode())).unwrap();
        p.graph = None;
        assert!(matches!(
            OnnxModel::decode(&p.encode_to_vec()),
            Err(OnnxError::NoGraph)
        ));
        let mut p = ModelProto::decode(Bytes::from(model().encode())).unwrap();
        p.ir_version = 0;
        let e = OnnxModel::decode(&p.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("no IR version"), "{e}");
        let mut p = ModelProto::decode(Bytes::from(model().encode())).unwrap();
        p.opset_import.clear();
        let e = OnnxModel::decode(&p.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("opset_import"), "{e}");
    }

    fn graph_proto(f: impl FnOnce(&mut GraphProto)) -> Vec<u8> {
        let mut p = ModelProto::decode(Bytes::from(model().encode())).unwrap();
        if let Some(g) = p.graph.as_mut() {
            f(g);
        }
        p.encode_to_vec()
    }

    #[test]
    fn bad_initializers_are_refused_by_name() {
        let b = graph_proto(|g| {
            g.initializer[2].raw_data = g.initializer[2].raw_data.slice(..4);
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 'fc.weight': raw_data has 4 bytes, but dims [3, 8] of FLOAT need 96 bytes"
        );
        let b = graph_proto(|g| {
            g.initializer[0].data_location = proto::DATA_LOCATION_EXTERNAL;
            g.initializer[0].raw_data = Bytes::new();
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tensor 'conv.weight': its data is stored outside"),
            "{e}"
        );
        let b = graph_proto(|g| g.initializer[1].data_type = 10);
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(
            e.to_string().contains("'conv.bias': element type FLOAT16"),
            "{e}"
        );
        let b = graph_proto(|g| {
            let dup = g.initializer[0].clone();
            g.initializer.push(dup);
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(
            e.to_string().contains("'conv.weight': two initializers"),
            "{e}"
        );
        let b = graph_proto(|g| g.initializer[0].name.clear());
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(e.to_string().contains("must have a name"), "{e}");
        let b = graph_proto(|g| {
            let values = g.initializer.pop();
            g.sparse_initializer.push(proto::SparseTensorProto {
                values,
                dims: vec![2],
            });
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(e.to_string().contains("sparse initializer"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let b = graph_proto(|g| {
            if let Some(t) = g.input[0].r#type.as_mut() {
                t.value = Some(type_proto::Value::SequenceType(type_proto::Other {}));
            }
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(
            e.to_string().starts_with("value 'input': is not a tensor"),
            "{e}"
        );
        let b = graph_proto(|g| {
            if let Some(Some(type_proto::Value::TensorType(t))) =
                g.output[0].r#type.as_mut().map(|t| t.value.as_mut())
                && let Some(s) = t.shape.as_mut()
            {
                s.dim[1].value = Some(dimension::Value::DimValue(-3));
            }
        });
        let e = OnnxModel::decode(&b).unwrap_err();
        assert!(
            e.to_string().contains("'logits': its shape has a negative"),
            "{e}"
        );
        // Non-tensor hints are dropped; a value with no type is kept as undefined.
        let b = graph_proto(|g| {
            let mut v = g.value_info[0].clone();
            v.name = "seq".into();
            v.r#type = Some(TypeProto {
                value: Some(type_proto::Value::MapType(type_proto::Other {})),
                denotation: String::new(),
            });
            g.value_info.push(v);
            g.value_info.push(ValueInfoProto {
                name: "untyped".into(),
                ..ValueInfoProto::default()
            });
        });
        let m = OnnxModel::decode(&b).unwrap();
        let names: Vec<_> = m.graph.value_info.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["r", "untyped"]);
        assert_eq!(m.graph.value_info[1].elem_type, DataType::UNDEFINED);
        assert_eq!(m.graph.value_info[1].shape, None);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut b = model().encode();
        // metadata_props (14): {key: "k", value: ""}, not declared here.
        b.extend_from_slice(&[(14 << 3) | 2, 5, 0x0a, 1, b'k', 0x12, 0]);
        // An unknown varint field 99 = 1 and an unknown fixed64 field 100.
        b.extend_from_slice(&[0x98, 0x06, 1]);
        b.extend_from_slice(&[0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(OnnxModel::decode(&b).unwrap(), model());
    }

    #[test]
    fn too_large_is_refused_before_decoding() {
        let e = too_large(PathBuf::from("big.onnx"), MAX_MODEL_BYTES + 1);
        assert!(e.to_string().contains("2147483647-byte limit"), "{e}");
    }

    mod prop {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn arb_tensor() -> impl Strategy<Value = Tensor> {
            vec(0usize..4, 0..4).prop_flat_map(|dims| {
                let n = dims.iter().product::<usize>();
                let data = prop_oneof![
                    vec(any::<f32>().prop_filter("no NaN", |x| !x.is_nan()), n)
                        .prop_map(TensorData::F32),
                    vec(any::<f64>().prop_filter("no NaN", |x| !x.is_nan()), n)
                        .prop_map(TensorData::F64),
                    vec(any::<i64>(), n).prop_map(TensorData::I64),
                    vec(any::<i32>(), n).prop_map(TensorData::I32),
                ];
                (Just(dims), data).prop_map(|(d, v)| Tensor::new(d, v).unwrap())
            })
        }

        fn arb_value() -> impl Strategy<Value = AttributeValue> {
            let finite = any::<f32>().prop_filter("no NaN", |x| !x.is_nan());
            prop_oneof![
                finite.clone().prop_map(AttributeValue::Float),
                any::<i64>().prop_map(AttributeValue::Int),
                ".{0,8}".prop_map(AttributeValue::String),
                arb_tensor().prop_map(AttributeValue::Tensor),
                vec(finite, 0..5).prop_map(AttributeValue::Floats),
                vec(any::<i64>(), 0..5).prop_map(AttributeValue::Ints),
                vec(".{0,4}", 0..3).prop_map(AttributeValue::Strings),
                vec(arb_tensor(), 0..3).prop_map(AttributeValue::Tensors),
                Just(AttributeValue::Unsupported(5)),
            ]
        }

        fn arb_dim() -> impl Strategy<Value = Dim> {
            prop_oneof![
                (0u64..=i64::MAX as u64).prop_map(Dim::Fixed),
                "[a-z]{1,5}".prop_map(Dim::Symbolic),
                Just(Dim::Unknown),
            ]
        }

        fn arb_value_info() -> impl Strategy<Value = ValueInfo> {
            (
                "[a-z]{1,6}",
                prop_oneof![Just(1), Just(7), Just(10), Just(0)],
                proptest::option::of(vec(arb_dim(), 0..4)),
            )
                .prop_map(|(name, t, shape)| ValueInfo {
                    name,
                    elem_type: DataType(t),
                    shape,
                })
        }

        fn arb_node() -> impl Strategy<Value = Node> {
            (
                "[A-Za-z_/]{0,8}",
                "[A-Z][a-z]{1,8}",
                prop_oneof![Just(String::new()), Just("com.example".to_string())],
                vec("[a-z]{0,4}", 0..4),
                vec("[a-z]{1,4}", 1..3),
                proptest::collection::btree_map("[a-z_]{1,8}", arb_value(), 0..4),
            )
                .prop_map(|(name, op_type, domain, inputs, outputs, attrs)| Node {
                    name,
                    op_type,
                    domain,
                    inputs,
                    outputs,
                    attributes: attrs
                        .into_iter()
                        .map(|(name, value)| Attribute { name, value })
                        .collect(),
                })
        }

        fn arb_model() -> impl Strategy<Value = OnnxModel> {
            (
                1i64..20,
                vec(("[a-z.]{0,10}", 1i64..30), 1..3),
                ".{0,10}",
                vec(arb_value_info(), 0..3),
                vec(arb_value_info(), 0..3),
                proptest::collection::btree_map("[a-z.]{1,10}", arb_tensor(), 0..4),
                vec(arb_node(), 0..5),
            )
                .prop_map(|(ir, opsets, producer, inputs, outputs, inits, nodes)| {
                    OnnxModel {
                        ir_version: ir,
                        opsets: opsets
                            .into_iter()
                            .map(|(d, v)| (d.to_string(), v))
                            .collect(),
                        producer,
                        producer_version: "1".into(),
                        graph: OnnxGraph {
                            name: "g".into(),
                            inputs,
                            value_info: outputs.clone(),
                            outputs,
                            initializers: inits.into_iter().collect(),
                            nodes,
                        },
                    }
                })
        }

        proptest! {
            #[test]
            fn decode_of_encode_is_identity(m in arb_model()) {
                let bytes = m.encode();
                let back = OnnxModel::decode(&bytes).unwrap();
                prop_assert_eq!(&back, &m);
                prop_assert_eq!(back.encode(), bytes);
            }
        }
    }
}
