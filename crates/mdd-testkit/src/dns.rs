//! An authoritative DNS server on UDP answering from a fixed table: real queries, real packets.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, TXT};
use hickory_proto::rr::{Name, RData, Record};
use tokio::net::UdpSocket;

use crate::ServerHandle;

/// The records the server knows.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: Vec<Record>,
    delay: Duration,
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    fn add(mut self, name: &str, rdata: RData) -> Zone {
        let name = Name::from_str(name).expect("valid DNS name");
        self.records.push(Record::from_rdata(name, 60, rdata));
        self
    }

    pub fn a(self, name: &str, ip: Ipv4Addr) -> Zone {
        self.add(name, RData::A(A(ip)))
    }

    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Zone {
        self.add(name, RData::AAAA(AAAA(ip)))
    }

    pub fn cname(self, name: &str, target: &str) -> Zone {
        let target = Name::from_str(target).expect("valid DNS name");
        self.add(name, RData::CNAME(CNAME(target)))
    }

    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = Name::from_str(exchange).expect("valid DNS name");
        self.add(name, RData::MX(MX::new(preference, exchange)))
    }

    pub fn txt(self, name: &str, text: &str) -> Zone {
        self.add(name, RData::TXT(TXT::new(vec![text.to_string()])))
    }

    /// Answers only after `delay`, to test latency limits.
    pub fn slow(mut self, delay: Duration) -> Zone {
        self.delay = delay;
        self
    }
}

/// Serves `zone` on 127.0.0.1 over UDP.
pub async fn serve(zone: Zone) -> ServerHandle {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if !zone.delay.is_zero() {
                tokio::time::sleep(zone.delay).await;
            }
            let mut response = Message::response(query.metadata.id, query.metadata.op_code);
            response.metadata.message_type = MessageType::Response;
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            let mut known_name = false;
            for q in &query.queries {
                response.add_query(q.clone());
                for record in &zone.records {
                    if record.name.eq_case(q.name()) || record.name == *q.name() {
                        known_name = true;
                        if record.record_type() == q.query_type() {
                            response.add_answer(record.clone());
                        }
                    }
                }
            }
            if !known_name {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    ServerHandle::new(addr, task)
}
