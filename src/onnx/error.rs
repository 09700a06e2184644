//! Errors of ONNX reading and writing. No message prints a weight or any other tensor value:
//! only names, shapes, types and sizes, since the weights of a model are secret.

use std::path::PathBuf;

/// Why an ONNX file could not be read, decoded or written.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be opened, read or written.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The operating system's error: in the message, not chained as a `source` too (that
        /// would print it twice in `{e:#}`).
        cause: std::io::Error,
    },
    /// The file is over [`super::MAX_MODEL_BYTES`], protobuf's own limit for one message.
    #[error(
        "{} is {size} bytes, over the {limit}-byte limit of one ONNX (protobuf) message; \
         models this large must keep their weights in external data, which is not supported",
        path.display()
    )]
    TooLarge {
        /// The file (or `(bytes in memory)`).
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes are not an ONNX model: protobuf decoding failed (garbage, another format, or
    /// a truncated file), or required top-level fields are missing.
    #[error("{}: {reason}", path.display())]
    Decode {
        /// The file (or `(bytes in memory)`).
        path: PathBuf,
        /// What is wrong, saying whether the file is not ONNX or truncated.
        reason: String,
    },
    /// The model has no graph.
    #[error("the ONNX model has no graph")]
    NoGraph,
    /// A tensor (initializer or attribute value) cannot be used.
    #[error("tensor '{name}': {reason}")]
    Tensor {
        /// The tensor's name (for an attribute tensor: the node and attribute).
        name: String,
        /// What is wrong (types, shapes and sizes only).
        reason: String,
    },
    /// A graph input, output or value_info entry cannot be used.
    #[error("value '{name}': {reason}")]
    Value {
        /// The value's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An attribute of a node is malformed or not of the type asked for.
    #[error("node '{node}' ({op_type}), attribute '{name}': {reason}")]
    Attribute {
        /// The node's name, or a description of an unnamed node.
        node: String,
        /// The node's operator.
        op_type: String,
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A node has attributes the caller does not know ([`super::Node::check_attrs`]).
    #[error(
        "node '{node}' ({op_type}) has attribute(s) not supported here: {}; supported: {}",
        names.join(", "),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    UnknownAttributes {
        /// The node's name, or a description of an unnamed node.
        node: String,
        /// The node's operator.
        op_type: String,
        /// The unknown attributes, in the node's order.
        names: Vec<String>,
        /// The attributes the caller knows.
        known: Vec<String>,
    },
    /// A tensor built in memory has a shape that does not match its number of values.
    #[error("a tensor of shape {dims:?} cannot hold {values} values")]
    Shape {
        /// The shape given.
        dims: Vec<usize>,
        /// The number of values given.
        values: usize,
    },
    /// An operator the importer does not compute, or computes only in some forms.
    #[error(
        "node '{node}' ({op_type}) is not supported: {reason}. Supported operators: {}",
        super::import::SUPPORTED.join(", ")
    )]
    Unsupported {
        /// The node's name, or a description of an unnamed node.
        node: String,
        /// The node's operator.
        op_type: String,
        /// Why, and what form would be supported.
        reason: String,
    },
    /// The graph cannot be imported: a missing initializer, a wrong input, an output that is
    /// not the classifier's.
    #[error("{what}: {reason}")]
    Import {
        /// The node or value concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A model cannot be written as ONNX ([`super::export()`]): its weights do not fit it, or a
    /// layer has no ONNX form the importer reads back.
    #[error("cannot export {what}: {reason}")]
    Export {
        /// The layer or tensor concerned.
        what: String,
        /// Why.
        reason: String,
    },
    /// The imported model does not check ([`crate::nn::ModelError`]).
    #[error("the imported model: {0}")]
    Model(#[from] crate::nn::ModelError),
}
