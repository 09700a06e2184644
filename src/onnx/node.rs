//! ONNX nodes and their attributes as plain Rust values, with typed attribute accessors whose
//! errors name the node, the operator and the attribute.

use super::error::OnnxError;
use super::proto::{AttributeProto, NodeProto, attr_type};
use super::tensor::Tensor;

/// One operator application of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Node name (optional in ONNX: may be empty).
    pub name: String,
    /// Operator, e.g. `Conv`.
    pub op_type: String,
    /// Operator set domain: empty (or `ai.onnx`) for the standard operators.
    pub domain: String,
    /// Input value names, in the operator's order; an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes in file order (names are distinct).
    pub attributes: Vec<Attribute>,
}

/// A named attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its value.
    pub value: AttributeValue,
}

/// The value of an attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// `FLOAT`.
    Float(f32),
    /// `INT`.
    Int(i64),
    /// `STRING` (UTF-8).
    String(String),
    /// `TENSOR`, e.g. the `value` of a `Constant` node.
    Tensor(Tensor),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `STRINGS`.
    Strings(Vec<String>),
    /// `TENSORS`.
    Tensors(Vec<Tensor>),
    /// A kind this crate does not decode (`GRAPH`, `GRAPHS`, `SPARSE_TENSOR`, `TYPE_PROTO`, ...),
    /// kept as its `AttributeType` code so the importer can refuse the node by name. Written
    /// back without its content.
    Unsupported(i32),
}

impl AttributeValue {
    /// The schema's name of the kind: `INT`, `FLOATS`, `GRAPH`, ...
    pub fn kind(&self) -> String {
        let code = match self {
            AttributeValue::Float(_) => attr_type::FLOAT,
            AttributeValue::Int(_) => attr_type::INT,
            AttributeValue::String(_) => attr_type::STRING,
            AttributeValue::Tensor(_) => attr_type::TENSOR,
            AttributeValue::Floats(_) => attr_type::FLOATS,
            AttributeValue::Ints(_) => attr_type::INTS,
            AttributeValue::Strings(_) => attr_type::STRINGS,
            AttributeValue::Tensors(_) => attr_type::TENSORS,
            AttributeValue::Unsupported(code) => *code,
        };
        attr_kind_name(code)
    }
}

fn attr_kind_name(code: i32) -> String {
    attr_type::name(code).map_or_else(
        || format!("attribute type {code} (unknown)"),
        str::to_string,
    )
}

impl Node {
    /// The node's name, or for an unnamed node a description by its first output, for errors.
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else if let Some(out) = self.outputs.first() {
            format!("(unnamed, output '{out}')")
        } else {
            "(unnamed)".to_string()
        }
    }

    /// The attribute called `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    fn attr_error(&self, name: &str, reason: String) -> OnnxError {
        OnnxError::Attribute {
            node: self.label(),
            op_type: self.op_type.clone(),
            name: name.to_string(),
            reason,
        }
    }

    fn wrong_kind(&self, a: &Attribute, expected: &str) -> OnnxError {
        self.attr_error(
            &a.name,
            format!("is {}, expected {expected}", a.value.kind()),
        )
    }

    /// An `INT` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Int(v),
                ..
            }) => Ok(Some(*v)),
            Some(a) => Err(self.wrong_kind(a, "INT")),
        }
    }

    /// An `INTS` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_ints(&self, name: &str) -> Result<Option<&[i64]>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Ints(v),
                ..
            }) => Ok(Some(v)),
            Some(a) => Err(self.wrong_kind(a, "INTS")),
        }
    }

    /// A `FLOAT` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_float(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Float(v),
                ..
            }) => Ok(Some(*v)),
            Some(a) => Err(self.wrong_kind(a, "FLOAT")),
        }
    }

    /// A `FLOATS` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_floats(&self, name: &str) -> Result<Option<&[f32]>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Floats(v),
                ..
            }) => Ok(Some(v)),
            Some(a) => Err(self.wrong_kind(a, "FLOATS")),
        }
    }

    /// A `STRING` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_string(&self, name: &str) -> Result<Option<&str>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::String(v),
                ..
            }) => Ok(Some(v)),
            Some(a) => Err(self.wrong_kind(a, "STRING")),
        }
    }

    /// A `STRINGS` attribute: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_strings(&self, name: &str) -> Result<Option<&[String]>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Strings(v),
                ..
            }) => Ok(Some(v)),
            Some(a) => Err(self.wrong_kind(a, "STRINGS")),
        }
    }

    /// A `TENSOR` attribute (e.g. `Constant`'s `value`): `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`OnnxError::Attribute`] when present with another kind.
    pub fn attr_tensor(&self, name: &str) -> Result<Option<&Tensor>, OnnxError> {
        match self.attr(name) {
            None => Ok(None),
            Some(Attribute {
                value: AttributeValue::Tensor(v),
                ..
            }) => Ok(Some(v)),
            Some(a) => Err(self.wrong_kind(a, "TENSOR")),
        }
    }

    /// Checks that every attribute of the node is in `known`.
    ///
    /// # Errors
    /// [`OnnxError::UnknownAttributes`] listing the others (in the node's order) and `known`.
    pub fn check_attrs(&self, known: &[&str]) -> Result<(), OnnxError> {
        let names: Vec<String> = self
            .attributes
            .iter()
            .filter(|a| !known.contains(&a.name.as_str()))
            .map(|a| a.name.clone())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        Err(OnnxError::UnknownAttributes {
            node: self.label(),
            op_type: self.op_type.clone(),
            names,
            known: known.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Decodes a `NodeProto`, checking attribute kinds, UTF-8 strings, attribute tensors and
    /// that attribute names are distinct.
    pub(crate) fn from_proto(p: NodeProto) -> Result<Self, OnnxError> {
        let mut node = Node {
            name: p.name,
            op_type: p.op_type,
            domain: p.domain,
            inputs: p.input,
            outputs: p.output,
            attributes: Vec::with_capacity(p.attribute.len()),
        };
        for a in p.attribute {
            if node.attr(&a.name).is_some() {
                return Err(node.attr_error(&a.name, "appears twice".to_string()));
            }
            let attr = node.decode_attr(a)?;
            node.attributes.push(attr);
        }
        Ok(node)
    }

    fn decode_attr(&self, a: AttributeProto) -> Result<Attribute, OnnxError> {
        let name = a.name;
        let utf8 = |bytes: Vec<u8>| {
            String::from_utf8(bytes)
                .map_err(|_| self.attr_error(&name, "is a string that is not UTF-8".to_string()))
        };
        let tensor_name = |i: Option<usize>| {
            let which = i.map(|i| format!("[{i}]")).unwrap_or_default();
            format!("{}.{name}{which}", self.label())
        };
        let value = match a.r#type {
            attr_type::FLOAT => AttributeValue::Float(a.f),
            attr_type::INT => AttributeValue::Int(a.i),
            attr_type::STRING => AttributeValue::String(utf8(a.s)?),
            attr_type::TENSOR => match a.t {
                Some(t) => AttributeValue::Tensor(Tensor::from_proto(t, &tensor_name(None))?),
                None => {
                    return Err(self.attr_error(&name, "is a TENSOR with no tensor".to_string()));
                }
            },
            attr_type::FLOATS => AttributeValue::Floats(a.floats),
            attr_type::INTS => AttributeValue::Ints(a.ints),
            attr_type::STRINGS => {
                AttributeValue::Strings(a.strings.into_iter().map(utf8).collect::<Result<_, _>>()?)
            }
            attr_type::TENSORS => AttributeValue::Tensors(
                a.tensors
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| Tensor::from_proto(t, &tensor_name(Some(i))))
                    .collect::<Result<_, _>>()?,
            ),
            attr_type::UNDEFINED => {
                return Err(self.attr_error(
                    &name,
                    "has no type (written for ONNX IR version 1, which is not supported)"
                        .to_string(),
                ));
            }
            other => AttributeValue::Unsupported(other),
        };
        Ok(Attribute { name, value })
    }

    /// Encodes as a `NodeProto`.
    pub(crate) fn to_proto(&self) -> NodeProto {
        NodeProto {
            input: self.inputs.clone(),
            output: self.outputs.clone(),
            name: self.name.clone(),
            op_type: self.op_type.clone(),
            domain: self.domain.clone(),
            attribute: self.attributes.iter().map(Attribute::to_proto).collect(),
            doc_string: String::new(),
        }
    }
}

impl Attribute {
    fn to_proto(&self) -> AttributeProto {
        let mut p = AttributeProto {
            name: self.name.clone(),
            ..AttributeProto::default()
        };
        p.r#type = match &self.value {
            AttributeValue::Float(v) => {
                p.f = *v;
                attr_type::FLOAT
            }
            AttributeValue::Int(v) => {
                p.i = *v;
                attr_type::INT
            }
            AttributeValue::String(v) => {
                p.s = v.as_bytes().to_vec();
                attr_type::STRING
            }
            AttributeValue::Tensor(t) => {
                p.t = Some(t.to_proto(""));
                attr_type::TENSOR
            }
            AttributeValue::Floats(v) => {
                p.floats = v.clone();
                attr_type::FLOATS
            }
            AttributeValue::Ints(v) => {
                p.ints = v.clone();
                attr_type::INTS
            }
            AttributeValue::Strings(v) => {
                p.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
                attr_type::STRINGS
            }
            AttributeValue::Tensors(v) => {
                p.tensors = v.iter().map(|t| t.to_proto("")).collect();
                attr_type::TENSORS
            }
            AttributeValue::Unsupported(code) => *code,
        };
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor::TensorData;

    fn conv() -> Node {
        let attrs = vec![
            ("kernel_shape", AttributeValue::Ints(vec![3, 3])),
            ("group", AttributeValue::Int(1)),
            ("alpha", AttributeValue::Float(0.5)),
            ("scales", AttributeValue::Floats(vec![1.0, 2.0])),
            ("auto_pad", AttributeValue::String("NOTSET".into())),
            ("modes", AttributeValue::Strings(vec!["a".into()])),
            (
                "value",
                AttributeValue::Tensor(Tensor::new(vec![2], TensorData::I64(vec![1, -1])).unwrap()),
            ),
            ("body", AttributeValue::Unsupported(attr_type::GRAPH)),
        ];
        Node {
            name: "/conv1/Conv".into(),
            op_type: "Conv".into(),
            domain: String::new(),
            inputs: vec!["x".into(), "w".into(), String::new()],
            outputs: vec!["y".into()],
            attributes: attrs
                .into_iter()
                .map(|(n, value)| Attribute {
                    name: n.into(),
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn accessors_return_typed_values_or_none() {
        let n = conv();
        assert_eq!(n.attr_ints("kernel_shape").unwrap(), Some(&[3i64, 3][..]));
        assert_eq!(n.attr_int("group").unwrap(), Some(1));
        assert_eq!(n.attr_float("alpha").unwrap(), Some(0.5));
        assert_eq!(n.attr_floats("scales").unwrap(), Some(&[1.0f32, 2.0][..]));
        assert_eq!(n.attr_string("auto_pad").unwrap(), Some("NOTSET"));
        assert_eq!(
            n.attr_strings("modes").unwrap().map(<[String]>::len),
            Some(1)
        );
        assert_eq!(
            n.attr_tensor("value").unwrap().and_then(Tensor::to_i64_vec),
            Some(vec![1, -1])
        );
        assert_eq!(n.attr_int("dilations").unwrap(), None);
        assert_eq!(n.attr_tensor("missing").unwrap(), None);
    }

    #[test]
    fn wrong_kind_names_node_op_and_attribute() {
        let n = conv();
        let e = n.attr_int("kernel_shape").unwrap_err();
        assert_eq!(
            e.to_string(),
            "node '/conv1/Conv' (Conv), attribute 'kernel_shape': is INTS, expected INT"
        );
        let e = n.attr_ints("body").unwrap_err();
        assert!(e.to_string().contains("is GRAPH, expected INTS"), "{e}");
        // The value of a mistyped attribute is never printed.
        let e = n.attr_int("alpha").unwrap_err();
        assert!(!e.to_string().contains("0.5"), "{e}");
        let mut unnamed = conv();
        unnamed.name.clear();
        let e = unnamed.attr_float("group").unwrap_err();
        assert!(e.to_string().contains("(unnamed, output 'y')"), "{e}");
    }

    #[test]
    fn check_attrs_lists_unknown_attributes() {
        let n = conv();
        let known = [
            "kernel_shape",
            "group",
            "alpha",
            "scales",
            "modes",
            "value",
            "body",
        ];
        let e = n.check_attrs(&known).unwrap_err();
        match &e {
            OnnxError::UnknownAttributes { names, .. } => assert_eq!(names, &["auto_pad"]),
            other => panic!("{other}"),
        }
        assert!(e.to_string().starts_with(
            "node '/conv1/Conv' (Conv) has attribute(s) not supported here: auto_pad; supported: kernel_shape"
        ));
        let mut all = known.to_vec();
        all.push("auto_pad");
        n.check_attrs(&all).unwrap();
        let e = n.check_attrs(&[]).unwrap_err();
        assert!(e.to_string().ends_with("supported: none"), "{e}");
    }

    #[test]
    fn proto_round_trip_and_malformed_attributes() {
        let n = conv();
        assert_eq!(Node::from_proto(n.to_proto()).unwrap(), n);

        let mut p = n.to_proto();
        p.attribute.push(p.attribute[0].clone());
        let e = Node::from_proto(p).unwrap_err();
        assert!(
            e.to_string().contains("'kernel_shape': appears twice"),
            "{e}"
        );

        let mut p = n.to_proto();
        p.attribute[0].r#type = attr_type::UNDEFINED;
        assert!(
            Node::from_proto(p)
                .unwrap_err()
                .to_string()
                .contains("has no type")
        );

        let mut p = n.to_proto();
        p.attribute[4].s = vec![0xff, 0xfe];
        assert!(
            Node::from_proto(p)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );

        let mut p = n.to_proto();
        p.attribute[6].t = None;
        assert!(
            Node::from_proto(p)
                .unwrap_err()
                .to_string()
                .contains("no tensor")
        );

        // A bad attribute tensor is named by node and attribute.
        let mut p = n.to_proto();
        if let Some(t) = p.attribute[6].t.as_mut() {
            t.data_type = 10;
        }
        let e = Node::from_proto(p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor '/conv1/Conv.value': element type FLOAT16 is not \
             supported (supported: FLOAT, DOUBLE, INT64, INT32)"
        );
    }
}
