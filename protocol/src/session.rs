//! Sessions and their connections, as the provisioner lists them.

/// A session as LIO reports it (the IET `/proc/net/iet/session` view).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// IET's 64-bit ISID+TSIH value, the number `ietadm --sid` takes.
    pub sid: u64,
    pub initiator: String,
    /// Negotiated session keys, IET spelling, in IET's show order.
    pub params: Vec<(String, String)>,
    pub connections: Vec<Connection>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    pub cid: u32,
    pub ip: String,
    /// `active`, `closing` or `unknown`.
    pub state: String,
    /// `none` or `crc32c`.
    pub header_digest: String,
    pub data_digest: String,
}
