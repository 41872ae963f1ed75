//! The understudy arbiter binary (a stub until the HTTP shell lands).

fn main() {}
