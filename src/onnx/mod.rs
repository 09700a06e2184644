//! ONNX model files: reading and writing the ONNX protobuf format into a plain Rust
//! representation of the graph ([`OnnxModel`], [`OnnxGraph`], [`Node`], [`Tensor`]).
//!
//! This is the low layer of ONNX import and export: it decodes and checks the file (sizes,
//! element types, shapes, attribute kinds) but gives no meaning to operators; converting to the
//! project's models is the importer's job. Parsing uses `prost` with the needed subset of the
//! official `onnx.proto3` transcribed in `proto.rs` (no build script, no `protoc`).
//!
//! Supported tensor element types are FLOAT, DOUBLE, INT64 and INT32; weights must be inside
//! the file (external data is refused). Errors never print tensor values.

mod error;
pub mod export;
mod graph;
pub mod import;
mod node;
mod proto;
mod tensor;

pub use error::OnnxError;
pub use export::export;
pub use graph::{Dim, OnnxGraph, OnnxModel, ValueInfo};
pub use import::{Fate, Imported, import, import_model};
pub use node::{Attribute, AttributeValue, Node};
pub use tensor::{DataType, Tensor, TensorData};

/// Largest `.onnx` file read or written: 2 GiB - 1 byte, protobuf's own limit for one
/// serialized message. Larger models need external data, which is not supported. A file over
/// the limit is refused from its size, before it is read.
pub const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;
