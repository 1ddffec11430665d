//! Real loopback peers for mdd's tests and benchmarks.
//!
//! HTTP and HTTPS servers, a TCP server with a banner, a DNS server answering real UDP queries,
//! a TLS-terminating proxy, and certificates made on the spot (valid, about to expire, expired,
//! for the wrong host, untrusted), and private PostgreSQL servers on a unix socket. Every server
//! binds 127.0.0.1 on a port the OS chooses (PostgreSQL: no TCP at all) and stops when dropped.
//!
//! Test-only: nothing in the product depends on this crate.

pub mod certs;
pub mod dns;
pub mod http;
pub mod postgres;
pub mod tcp;
pub mod tls_proxy;

use std::net::SocketAddr;

/// A port on 127.0.0.1 that was free a moment ago, for a target that must come up later in a test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on a test machine")
}

/// Stops a server's accept loop when dropped.
#[derive(Debug)]
pub struct ServerHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    pub(crate) fn new(addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> ServerHandle {
        ServerHandle { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod postgres_tests {
    #[test]
    fn a_private_postgres_starts_answers_and_goes() {
        let pg = crate::postgres::Postgres::start();
        let url = pg.create_database("probe");
        assert!(url.contains("probe"));
        let dir = pg.socket_dir().to_path_buf();
        assert!(dir.join(".s.PGSQL.5432").exists());
        drop(pg);
        assert!(!dir.exists(), "removed when dropped");
    }
}
