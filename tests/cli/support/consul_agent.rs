//! A real `consul agent -dev` for the suite (placeholder: being built).

/// Whether `CONVERGENT_TEST_CONSUL_BIN` names a consul binary to test against.
pub fn configured() -> bool {
    std::env::var_os("CONVERGENT_TEST_CONSUL_BIN").is_some()
}

/// A running agent; stopped when dropped.
pub struct ConsulAgent {}

impl ConsulAgent {
    /// Starts an agent on free loopback ports.
    pub fn start() -> ConsulAgent {
        unimplemented!("the Consul agent guard is being built")
    }

    /// `127.0.0.1:PORT` of its HTTP API.
    pub fn address(&self) -> String {
        unimplemented!()
    }
}
