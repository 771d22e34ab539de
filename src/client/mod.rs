//! A plain blocking client of the protocol, shared by kvsctl, the tests and the tools.
