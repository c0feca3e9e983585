//! Criterion benchmark of the worker channel: placeholder, to be filled in.

fn main() {}
