//! choreo: a local, Kubernetes-style automation engine for network and infrastructure intent.
pub mod api;
pub mod store;
