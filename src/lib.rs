//! securenn: private machine learning by secure three-party computation.
//!
//! Two protocols of the tf-encrypted family run over swappable transports: **SecureNN** (Wagh,
//! Gupta, Chandran, PETS 2019: exact ReLU, max pooling and division by secret-shared comparison
//! with a helper party) and **Pond** (tf-encrypted's SPDZ-style protocol with a crypto producer,
//! polynomial ReLU, average pooling), plus a plaintext reference backend. See DESIGN.md for the
//! layers; each module's first line says what it is and which algorithm it implements.

pub mod bench;
pub mod channel;
pub mod data;
pub mod deploy;
pub mod fixed;
pub mod infer;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod par;
pub mod party;
pub mod plot;
pub mod protocol;
pub mod ring;
pub mod scenario;
pub mod share;
pub mod training;

/// Every allocation of a process that links the library is counted per party ([`memory`]): the
/// binary, the tests and the benches alike.
#[global_allocator]
static ALLOCATOR: memory::CountingAlloc = memory::CountingAlloc;
