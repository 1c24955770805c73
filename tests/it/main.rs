//! End-to-end tests: the real `choreo` binary as server and client, on temporary sockets and
//! projects. One test binary, modules by theme.

mod support;

// Bounded reconcilers and an engine that answers during any run.
mod bounds;
// Edits of the project's files by apply and delete: identity, all-or-nothing, crashes.
mod edits;
// Git: dynamic mode (server apply), branches, commit and push, upstream refs.
mod git;
// -r: the identifier backends.
mod ids;
// Reconcilers in a worker process that can die without the server.
mod isolation;
// Requests and answers larger than one frame.
mod large;
// kubectl habits on get: selectors, wide, jsonpath, custom columns, sorting.
mod kubectl;
// Loading projects: CRDs, inputs, load errors, removal and garbage collection.
mod load;
// The CLI's object commands: get, api-resources, apply, delete.
mod objects;
// Reconciler runs: run once, results, snapshots, diff and deps.
mod run;
// Snapshots of help texts and tables.
mod snapshots;
// -s: device configs validated against YANG.
mod sdc;
// Running as a service: systemd readiness, watchdog, socket activation, unit files.
mod service;
// The server process: socket ownership, protocol robustness, peers, shutdown, durability.
mod server;
// Template reconcilers: gotemplate and jinjatemplate.
mod templates;
// The file watch loop and continuous mode.
mod watch;
