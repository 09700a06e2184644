//! The subset of the ONNX protobuf schema (`onnx/onnx.proto3`) that this crate reads and writes,
//! transcribed by hand as `prost` messages with the official field numbers and types.
//!
//! Fields that are not declared here (metadata, training info, local functions, sub-graphs of
//! control-flow attributes, quantization annotations, ...) are skipped when decoding, as protobuf
//! requires of readers, and are not written. Repeated scalar fields decode in both packed and
//! unpacked form (the official C++ library writes some of them unpacked, from the proto2 schema).
//! Enumerations are kept as their `int32` wire value so that values from newer ONNX versions
//! are seen (and refused by name) rather than lost.

use prost::bytes::Bytes;

/// `ModelProto`: the top-level message of a `.onnx` file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The IR version the model targets (`Version` enum of onnx.proto).
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Framework or tool that wrote the model.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Version of that framework or tool.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Reverse-DNS domain of the model.
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Version of the model itself.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Free documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph to evaluate.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Operator sets the graph's nodes bind to.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

/// `OperatorSetIdProto`: one (domain, version) operator set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// Empty (or `ai.onnx`) for the standard operators.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// The operator set version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`: nodes in topological order, initializers, inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// The nodes, sorted topologically.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Name of the graph.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights), each with a distinct name.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Free documentation.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Graph inputs (may also list initializers, IR version < 4 style).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types and shapes of intermediate values (optional hints).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    /// Initializers in sparse form: declared only to refuse them by name.
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
}

/// `NodeProto`: one operator application.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Names of the input values (an empty name is an omitted optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Names of the output values.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Optional node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator name, e.g. `Conv`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Attributes of the operator.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Free documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// Operator set domain of `op_type` (empty for the standard operators).
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto`: a named attribute; `type` says which value field is in use.
/// The graph-valued fields `g` (6) and `graphs` (11) and the sparse ones are not declared.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// FLOAT value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// INT value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// STRING value (UTF-8 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// TENSOR value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// FLOATS value.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// INTS value.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// STRINGS value.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// TENSORS value.
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    /// Free documentation.
    #[prost(string, tag = "13")]
    pub doc_string: String,
    /// `AttributeType` discriminator (see [`attr_type`]).
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// Values of `AttributeProto.AttributeType`.
pub mod attr_type {
    pub const UNDEFINED: i32 = 0;
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const GRAPH: i32 = 5;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
    pub const STRINGS: i32 = 8;
    pub const TENSORS: i32 = 9;
    pub const GRAPHS: i32 = 10;
    pub const SPARSE_TENSOR: i32 = 11;
    pub const SPARSE_TENSORS: i32 = 12;
    pub const TYPE_PROTO: i32 = 13;
    pub const TYPE_PROTOS: i32 = 14;

    /// The schema's name of an attribute type.
    pub fn name(code: i32) -> Option<&'static str> {
        Some(match code {
            UNDEFINED => "UNDEFINED",
            FLOAT => "FLOAT",
            INT => "INT",
            STRING => "STRING",
            TENSOR => "TENSOR",
            GRAPH => "GRAPH",
            FLOATS => "FLOATS",
            INTS => "INTS",
            STRINGS => "STRINGS",
            TENSORS => "TENSORS",
            GRAPHS => "GRAPHS",
            SPARSE_TENSOR => "SPARSE_TENSOR",
            SPARSE_TENSORS => "SPARSE_TENSORS",
            TYPE_PROTO => "TYPE_PROTO",
            TYPE_PROTOS => "TYPE_PROTOS",
            _ => return None,
        })
    }
}

/// `TensorProto`: a serialized tensor. Its `Debug` prints no values (weights are secret).
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct TensorProto {
    /// Shape, row-major.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// `DataType` code (see [`crate::onnx::DataType`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Chunked storage of a very large tensor: declared only to refuse it.
    #[prost(message, optional, tag = "3")]
    pub segment: Option<Segment>,
    /// FLOAT (and COMPLEX64) values.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32, INT16, INT8, UINT16, UINT8, BOOL and FLOAT16 values.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// STRING values.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    /// INT64 values.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Name (required for initializers).
    #[prost(string, tag = "8")]
    pub name: String,
    /// Values as fixed-width little-endian bytes.
    #[prost(bytes = "bytes", tag = "9")]
    pub raw_data: Bytes,
    /// DOUBLE (and COMPLEX128) values.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// UINT32 and UINT64 values.
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    /// Free documentation.
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// Where external data lives (`location`, `offset`, `length`, `checksum`).
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// `DataLocation`: 0 DEFAULT, 1 EXTERNAL.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

impl std::fmt::Debug for TensorProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorProto")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("data_type", &self.data_type)
            .field("raw_data_bytes", &self.raw_data.len())
            .field("data_location", &self.data_location)
            .finish_non_exhaustive()
    }
}

/// `TensorProto.DataLocation.EXTERNAL`.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

/// `TensorProto.Segment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Segment {
    /// First element of the segment.
    #[prost(int64, tag = "1")]
    pub begin: i64,
    /// One past the last element.
    #[prost(int64, tag = "2")]
    pub end: i64,
}

/// `StringStringEntryProto`: a key-value pair.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `SparseTensorProto`: declared only to name sparse initializers when refusing them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SparseTensorProto {
    /// The non-default values (its name is the initializer's name).
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    /// Shape of the dense tensor.
    #[prost(int64, repeated, tag = "3")]
    pub dims: Vec<i64>,
}

/// `ValueInfoProto`: name, type and shape of a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Free documentation.
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `TypeProto`: the type of a value; only tensors are described in detail.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// Which kind of type.
    #[prost(oneof = "type_proto::Value", tags = "1, 4, 5, 7, 8, 9")]
    pub value: Option<type_proto::Value>,
    /// Optional standard denotation.
    #[prost(string, tag = "6")]
    pub denotation: String,
}

/// Nested messages of `TypeProto`.
pub mod type_proto {
    use super::TensorShapeProto;

    /// `TypeProto.Tensor`: element type and optional shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// `DataType` code.
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// Shape; absent means the rank is unknown.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// A non-tensor type, recognised only to be refused by name (its content is skipped).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Other {}

    /// `oneof value` of `TypeProto`; variant names follow the schema's field names.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::enum_variant_names)]
    pub enum Value {
        /// `tensor_type = 1`.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
        /// `sequence_type = 4`.
        #[prost(message, tag = "4")]
        SequenceType(Other),
        /// `map_type = 5`.
        #[prost(message, tag = "5")]
        MapType(Other),
        /// `opaque_type = 7` (onnx-ml).
        #[prost(message, tag = "7")]
        OpaqueType(Other),
        /// `sparse_tensor_type = 8`.
        #[prost(message, tag = "8")]
        SparseTensorType(Other),
        /// `optional_type = 9`.
        #[prost(message, tag = "9")]
        OptionalType(Other),
    }
}

/// `TensorShapeProto`: a list of dimensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested messages of `TensorShapeProto`.
pub mod tensor_shape_proto {
    /// `TensorShapeProto.Dimension`: a fixed size, a symbol, or nothing (unknown).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// `oneof value { int64 dim_value = 1; string dim_param = 2; }`.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        /// Optional standard denotation.
        #[prost(string, tag = "3")]
        pub denotation: String,
    }

    /// Nested `oneof` of `Dimension`.
    pub mod dimension {
        /// `oneof value` of `TensorShapeProto.Dimension`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// `dim_value = 1`: a fixed size.
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// `dim_param = 2`: a symbolic size, e.g. `batch`.
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}
