//! Template reconcilers against an in-memory client.
