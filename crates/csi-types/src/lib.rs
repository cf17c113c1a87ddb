//! Typed, validated CSI v1.12 messages, driver traits, spec error codes and
//! gRPC serving. (Crate docs are completed below.)

pub mod capabilities;
pub mod error;
pub mod ids;
pub mod proto;
pub mod redact;
pub mod types;
mod validate;

pub use capabilities::*;
pub use error::{Code, CsiError};
pub use ids::*;
pub use redact::{Secrets, STRIPPED};
pub use types::*;
pub mod controller;
pub mod group_controller;
pub mod identity;
mod messages;
pub mod node;
pub mod snapshot_metadata;

pub use controller::*;
pub use group_controller::*;
pub use identity::*;
pub use node::*;
pub use snapshot_metadata::*;
#[cfg(feature = "proptest")]
pub mod arbitrary;
