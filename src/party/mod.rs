//! The parties as actix actors: each owns its transport endpoint and a mailbox that routes
//! incoming envelopes to the waiting receive by rendezvous key, agrees the session's seeds, and
//! runs jobs sent to it as typed messages. Protocol logic stays out of the handlers: they only
//! host the protocol future.

mod actor;
mod cluster;
mod mailbox;
mod setup;

pub use actor::{
    JobFn, JobOutput, PartyActor, PartyConfig, Run, Setup, send_abort, thread_cpu_time,
};
pub use cluster::{LocalCluster, Network, RunReport, process_cpu_time, spmd};
pub use mailbox::Mailbox;
pub use setup::{SeedSource, agree_seeds};
