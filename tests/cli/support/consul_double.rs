//! An HTTP double of Consul's API (placeholder: being built).

/// A Consul double listening on a loopback port; stopped when dropped.
pub struct ConsulDouble {}

impl ConsulDouble {
    /// Starts a double on a free loopback port.
    pub fn start() -> ConsulDouble {
        unimplemented!("the Consul double is being built")
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        unimplemented!()
    }
}
