//! Neural-network layers and models (graphs of layers). The architecture is public; the weights belong
//! to the model owner. The same `forward` runs on the plaintext, Pond and SecureNN backends and a
//! float reference runs the model in f64.

mod float;
mod model;
pub mod range;
pub mod train;
pub mod weights_file;

pub use float::forward_float;
pub(crate) use model::unencodable;
pub use model::{
    InputLayout, Layer, LayerInfo, MAX_ELEMENTS, Model, ModelError, Node, Weights, forward,
    input_params,
};
