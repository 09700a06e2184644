//! ONNX tensors as plain Rust values: element types, and decoding of `TensorProto` (from
//! `raw_data` little-endian bytes or the typed repeated fields) with checks of type, shape and
//! size; encoding back as `raw_data`. Neither `Debug` nor any error prints a value.

use super::MAX_MODEL_BYTES;
use super::error::OnnxError;
use super::proto::{self, TensorProto};
use prost::bytes::Bytes;
use std::fmt;

/// An ONNX element type (`TensorProto.DataType` code), kept as its code so that types this
/// crate does not decode can still be named in errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataType(pub i32);

impl DataType {
    /// No type given.
    pub const UNDEFINED: DataType = DataType(0);
    /// 32-bit IEEE float.
    pub const FLOAT: DataType = DataType(1);
    /// 32-bit signed integer.
    pub const INT32: DataType = DataType(6);
    /// 64-bit signed integer.
    pub const INT64: DataType = DataType(7);
    /// 64-bit IEEE float.
    pub const DOUBLE: DataType = DataType(11);

    /// The schema's name (`FLOAT`, `UINT8`, `FLOAT16`, ...), or `None` for an unknown code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "UNDEFINED",
            1 => "FLOAT",
            2 => "UINT8",
            3 => "INT8",
            4 => "UINT16",
            5 => "INT16",
            6 => "INT32",
            7 => "INT64",
            8 => "STRING",
            9 => "BOOL",
            10 => "FLOAT16",
            11 => "DOUBLE",
            12 => "UINT32",
            13 => "UINT64",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            16 => "BFLOAT16",
            17 => "FLOAT8E4M3FN",
            18 => "FLOAT8E4M3FNUZ",
            19 => "FLOAT8E5M2",
            20 => "FLOAT8E5M2FNUZ",
            21 => "UINT4",
            22 => "INT4",
            23 => "FLOAT4E2M1",
            24 => "FLOAT8E8M0",
            25 => "UINT2",
            26 => "INT2",
            _ => return None,
        })
    }

    /// Bytes per element for the types [`TensorData`] holds.
    fn supported_size(self) -> Option<usize> {
        match self {
            DataType::FLOAT | DataType::INT32 => Some(4),
            DataType::INT64 | DataType::DOUBLE => Some(8),
            _ => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "data type {} (unknown)", self.0),
        }
    }
}

impl fmt::Debug for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The values of a tensor, row-major. `Debug` shows the type and count only.
#[derive(Clone, PartialEq)]
pub enum TensorData {
    /// `FLOAT`.
    F32(Vec<f32>),
    /// `DOUBLE`.
    F64(Vec<f64>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `INT32`.
    I32(Vec<i32>),
}

impl TensorData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX element type.
    pub fn data_type(&self) -> DataType {
        match self {
            TensorData::F32(_) => DataType::FLOAT,
            TensorData::F64(_) => DataType::DOUBLE,
            TensorData::I64(_) => DataType::INT64,
            TensorData::I32(_) => DataType::INT32,
        }
    }
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<{} values>)", self.data_type(), self.len())
    }
}

/// A dense tensor: a shape and as many values as the shape's product. `Debug` prints the shape
/// and type, never values.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dims: Vec<usize>,
    data: TensorData,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dims", &self.dims)
            .field("data", &self.data)
            .finish()
    }
}

/// Product of `dims`, or `None` on overflow.
fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

impl Tensor {
    /// A tensor of shape `dims` (empty for a scalar) holding `data` in row-major order.
    ///
    /// # Errors
    /// [`OnnxError::Shape`] when the product of `dims` is not the number of values.
    pub fn new(dims: Vec<usize>, data: TensorData) -> Result<Self, OnnxError> {
        if checked_numel(&dims) != Some(data.len()) {
            return Err(OnnxError::Shape {
                dims,
                values: data.len(),
            });
        }
        Ok(Tensor { dims, data })
    }

    /// The shape (empty for a scalar).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The values.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The shape and the values, by value.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.dims, self.data)
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        self.data.data_type()
    }

    /// Number of elements (the product of the dims; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values as `f64` (exact for all but integers beyond ±2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// The values as `i64` for an integer tensor (shapes, axes, indices); `None` for a float
    /// tensor.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::F32(_) | TensorData::F64(_) => None,
        }
    }

    /// Decodes a `TensorProto`; `name` is used in errors (the tensor's own name is often empty
    /// for attribute tensors).
    pub(crate) fn from_proto(t: TensorProto, name: &str) -> Result<Self, OnnxError> {
        let err = |reason: String| OnnxError::Tensor {
            name: name.to_string(),
            reason,
        };
        if t.data_location == proto::DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
            let location = t
                .external_data
                .iter()
                .find(|e| e.key == "location")
                .map(|e| format!(" (in '{}')", e.value))
                .unwrap_or_default();
            return Err(err(format!(
                "its data is stored outside the .onnx file{location}; external data is not \
                 supported: the weights must be inside the file (export with external data \
                 off, e.g. onnx.save(model, path, save_as_external_data=False))"
            )));
        }
        if t.segment.is_some() {
            return Err(err(
                "it is stored in segments, which is not supported".to_string()
            ));
        }
        let dtype = DataType(t.data_type);
        let Some(elem_size) = dtype.supported_size() else {
            return Err(err(format!(
                "element type {dtype} is not supported (supported: FLOAT, DOUBLE, INT64, INT32)"
            )));
        };
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            match usize::try_from(d) {
                Ok(d) => dims.push(d),
                Err(_) => {
                    return Err(err(format!("dims {:?} has a negative dimension", t.dims)));
                }
            }
        }
        let max_elems = usize::try_from(MAX_MODEL_BYTES).unwrap_or(usize::MAX) / elem_size;
        let numel = match checked_numel(&dims) {
            Some(n) if n <= max_elems => n,
            _ => {
                return Err(err(format!(
                    "dims {dims:?} give more {dtype} elements than a {MAX_MODEL_BYTES}-byte \
                     file can hold"
                )));
            }
        };

        let typed_counts = [
            ("float_data", t.float_data.len()),
            ("int32_data", t.int32_data.len()),
            ("string_data", t.string_data.len()),
            ("int64_data", t.int64_data.len()),
            ("double_data", t.double_data.len()),
            ("uint64_data", t.uint64_data.len()),
        ];
        let expected_field = match dtype {
            DataType::FLOAT => "float_data",
            DataType::INT32 => "int32_data",
            DataType::INT64 => "int64_data",
            _ => "double_data",
        };
        if let Some((field, _)) = typed_counts
            .iter()
            .find(|&&(f, n)| n > 0 && (f != expected_field || !t.raw_data.is_empty()))
        {
            let also = if t.raw_data.is_empty() {
                String::new()
            } else {
                " as well as raw_data".to_string()
            };
            return Err(err(format!(
                "a {dtype} tensor with values in {field}{also}"
            )));
        }

        let data = if !t.raw_data.is_empty() || numel == 0 {
            let raw = &t.raw_data;
            if raw.len() != numel * elem_size {
                return Err(err(format!(
                    "raw_data has {} bytes, but dims {dims:?} of {dtype} need {} bytes",
                    raw.len(),
                    numel * elem_size
                )));
            }
            decode_raw(dtype, raw)
        } else {
            let (data, count) = match dtype {
                DataType::FLOAT => {
                    let n = t.float_data.len();
                    (TensorData::F32(t.float_data), n)
                }
                DataType::INT32 => {
                    let n = t.int32_data.len();
                    (TensorData::I32(t.int32_data), n)
                }
                DataType::INT64 => {
                    let n = t.int64_data.len();
                    (TensorData::I64(t.int64_data), n)
                }
                _ => {
                    let n = t.double_data.len();
                    (TensorData::F64(t.double_data), n)
                }
            };
            if count != numel {
                return Err(err(format!(
                    "{expected_field} has {count} values, but dims {dims:?} need {numel}"
                )));
            }
            data
        };
        Ok(Tensor { dims, data })
    }

    /// Encodes as a `TensorProto` named `name`, values in `raw_data` (little-endian).
    pub(crate) fn to_proto(&self, name: &str) -> TensorProto {
        // `Tensor::new` and `from_proto` guarantee the dims fit in i64 (their product is the
        // length of a Vec); saturate rather than panic all the same.
        let dims = self
            .dims
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect();
        let raw: Vec<u8> = match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        TensorProto {
            dims,
            data_type: self.data_type().0,
            name: name.to_string(),
            raw_data: Bytes::from(raw),
            ..TensorProto::default()
        }
    }
}

/// Decodes little-endian `raw`, whose length is a multiple of the element size of `dtype`
/// (one of the supported types).
fn decode_raw(dtype: DataType, raw: &[u8]) -> TensorData {
    fn chunks<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect()
    }
    match dtype {
        DataType::FLOAT => TensorData::F32(chunks(raw, f32::from_le_bytes)),
        DataType::INT32 => TensorData::I32(chunks(raw, i32::from_le_bytes)),
        DataType::INT64 => TensorData::I64(chunks(raw, i64::from_le_bytes)),
        _ => TensorData::F64(chunks(raw, f64::from_le_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::StringStringEntryProto;

    fn raw_proto(dtype: i32, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            dims,
            data_type: dtype,
            name: "w".into(),
            raw_data: Bytes::from(raw),
            ..TensorProto::default()
        }
    }

    fn reason(e: OnnxError) -> String {
        match e {
            OnnxError::Tensor { name, reason } => {
                assert_eq!(name, "w");
                reason
            }
            other => panic!("expected a Tensor error, got {other}"),
        }
    }

    #[test]
    fn raw_data_decodes_little_endian() {
        let raw: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0, 3.0, -0.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = Tensor::from_proto(raw_proto(1, vec![2, 3], raw), "w").unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        assert_eq!(
            t.data(),
            &TensorData::F32(vec![1.5, -2.0, 0.25, 8.0, 3.0, -0.5])
        );
        assert_eq!(t.numel(), 6);
        assert_eq!(t.to_f64_vec()[0], 1.5);
        assert_eq!(t.to_i64_vec(), None);

        let raw: Vec<u8> = [-1i64, 1 << 40]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = Tensor::from_proto(raw_proto(7, vec![2], raw), "w").unwrap();
        assert_eq!(t.to_i64_vec(), Some(vec![-1, 1 << 40]));

        let raw: Vec<u8> = [7i32].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = Tensor::from_proto(raw_proto(6, vec![], raw), "w").unwrap();
        assert_eq!(t.dims(), &[] as &[usize]);
        assert_eq!(t.to_i64_vec(), Some(vec![7]));

        let raw: Vec<u8> = 0.1f64.to_le_bytes().to_vec();
        let t = Tensor::from_proto(raw_proto(11, vec![1, 1], raw), "w").unwrap();
        assert_eq!(t.data(), &TensorData::F64(vec![0.1]));
    }

    #[test]
    fn typed_fields_decode() {
        let p = TensorProto {
            dims: vec![3],
            data_type: 7,
            int64_data: vec![1, -1, 0],
            ..TensorProto::default()
        };
        assert_eq!(
            Tensor::from_proto(p, "w").unwrap().data(),
            &TensorData::I64(vec![1, -1, 0])
        );
        let p = TensorProto {
            dims: vec![2],
            data_type: 1,
            float_data: vec![0.5, 2.0],
            ..TensorProto::default()
        };
        assert_eq!(
            Tensor::from_proto(p, "w").unwrap().to_f64_vec(),
            vec![0.5, 2.0]
        );
        let p = TensorProto {
            dims: vec![0, 4],
            data_type: 1,
            ..TensorProto::default()
        };
        assert_eq!(Tensor::from_proto(p, "w").unwrap().numel(), 0);
    }

    #[test]
    fn raw_data_length_mismatch_is_refused_without_values() {
        let raw: Vec<u8> = [1.25f32; 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        let r = reason(Tensor::from_proto(raw_proto(1, vec![2, 3], raw), "w").unwrap_err());
        assert!(r.contains("20 bytes") && r.contains("24 bytes"), "{r}");
        assert!(!r.contains("1.25"), "{r}");
        // Missing data entirely.
        let r = reason(Tensor::from_proto(raw_proto(1, vec![4], vec![]), "w").unwrap_err());
        assert!(r.contains("float_data has 0 values"), "{r}");
        // Typed field count mismatch.
        let p = TensorProto {
            name: "w".into(),
            dims: vec![3],
            data_type: 7,
            int64_data: vec![1, 2],
            ..TensorProto::default()
        };
        assert!(reason(Tensor::from_proto(p, "w").unwrap_err()).contains("need 3"));
    }

    #[test]
    fn data_in_the_wrong_field_is_refused() {
        let mut p = raw_proto(1, vec![1], 1f32.to_le_bytes().to_vec());
        p.float_data = vec![1.0];
        assert!(reason(Tensor::from_proto(p, "w").unwrap_err()).contains("as well as raw_data"));
        let p = TensorProto {
            dims: vec![1],
            data_type: 1,
            int64_data: vec![1],
            ..TensorProto::default()
        };
        assert!(reason(Tensor::from_proto(p, "w").unwrap_err()).contains("int64_data"));
    }

    #[test]
    fn external_data_is_refused() {
        let mut p = raw_proto(1, vec![2], vec![]);
        p.data_location = 1;
        p.external_data = vec![StringStringEntryProto {
            key: "location".into(),
            value: "model.onnx.data".into(),
        }];
        let r = reason(Tensor::from_proto(p, "w").unwrap_err());
        assert!(r.contains("must be inside the file"), "{r}");
        assert!(r.contains("model.onnx.data"), "{r}");
    }

    #[test]
    fn unsupported_types_are_named() {
        for (code, name) in [(10, "FLOAT16"), (2, "UINT8"), (8, "STRING"), (9, "BOOL")] {
            let r = reason(Tensor::from_proto(raw_proto(code, vec![1], vec![0]), "w").unwrap_err());
            assert!(r.contains(name), "{r}");
        }
        let r = reason(Tensor::from_proto(raw_proto(99, vec![1], vec![0]), "w").unwrap_err());
        assert!(r.contains("data type 99"), "{r}");
    }

    #[test]
    fn absurd_or_negative_dims_are_refused() {
        let big = i64::MAX / 2;
        for dims in [vec![big, big, 4], vec![1 << 30, 1 << 30], vec![-1, 3]] {
            let r = reason(Tensor::from_proto(raw_proto(1, dims, vec![]), "w").unwrap_err());
            assert!(r.contains("dims"), "{r}");
        }
    }

    #[test]
    fn new_checks_the_shape_and_debug_hides_values() {
        assert!(matches!(
            Tensor::new(vec![2, 2], TensorData::F32(vec![1.0; 3])),
            Err(OnnxError::Shape { values: 3, .. })
        ));
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::F32(vec![])).is_err());
        let t = Tensor::new(vec![2], TensorData::F32(vec![0.123, 4.56])).unwrap();
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("0.123") && !shown.contains("4.56"),
            "{shown}"
        );
        assert!(shown.contains("FLOAT(<2 values>)"), "{shown}");
        let p = t.to_proto("w");
        assert!(!format!("{p:?}").contains("0.123"));
        assert_eq!(Tensor::from_proto(p, "w").unwrap(), t);
    }
}
