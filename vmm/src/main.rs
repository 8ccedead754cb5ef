//! `condo`: the command line that drives tenant microVMs and their containers.

fn main() {}
