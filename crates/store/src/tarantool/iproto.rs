//! A client of Tarantool's binary protocol (IPROTO), as much of it as refacen needs: the
//! greeting, chap-sha1 authentication, PING and CALL. Hand-written on tokio and rmpv because
//! the one Rust crate that speaks Tarantool 2.6's protocol (rusty_tarantool) has been
//! unmaintained since 2022.
//!
//! One connection per server; requests go one at a time and the reply is read before the next
//! request. A connection that fails is dropped and opened again on the next try: every call
//! refacen makes is idempotent, so it is retried after a lost connection or reply, for the
//! retry window ([`super::super::retry`]). Errors the server answers (Lua errors among them)
//! are answers and are never retried.

use std::fmt;
use std::io::Cursor;
use std::time::Duration;

use base64::Engine;
use rmpv::Value;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::retry::{Retrier, RetryWindow};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger replies are refused rather than allocated: none of refacen's comes near.
const MAX_REPLY: u32 = 256 << 20;

const GREETING: usize = 128;
/// Set in a reply's request-type code when it is an error; the rest is the error's code.
const ERROR_FLAG: u64 = 0x8000;

/// The keys of the header and body maps that refacen writes or reads.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Key {
    RequestType = 0x00,
    Sync = 0x01,
    Tuple = 0x21,
    FunctionName = 0x22,
    UserName = 0x23,
    Data = 0x30,
    ErrorMessage = 0x31,
}

impl From<Key> for Value {
    fn from(key: Key) -> Value {
        Value::from(key as u8)
    }
}

/// The requests refacen sends (the value of [`Key::RequestType`] in a request's header).
#[repr(u8)]
enum Request {
    Auth = 0x07,
    Call = 0x0a,
    Ping = 0x40,
}

/// Tarantool's error code for a function that is not defined.
pub const ER_NO_SUCH_PROC: u32 = 33;

#[derive(Debug)]
pub enum Error {
    /// The server answered with an error (raised by Lua, or by the server itself).
    Server { code: u32, message: String },
    /// No answer: the connection failed or was lost, or the server took too long or does not
    /// speak IPROTO.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server { message, .. } => f.write_str(message),
            Error::Io(message) => f.write_str(message),
        }
    }
}

/// A server address: `host:port` or `user:password@host:port` (`user@host:port` for a user
/// without a password).
#[derive(Clone)]
pub struct Address {
    host_port: String,
    credentials: Option<(String, String)>,
}

impl Address {
    pub fn parse(address: &str) -> Result<Address, String> {
        let (credentials, host_port) = match address.rsplit_once('@') {
            Some((credentials, host_port)) => {
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                if user.is_empty() {
                    return Err(format!("tarantool address {host_port}: the user name before '@' is empty"));
                }
                (Some((user.to_string(), password.to_string())), host_port)
            }
            None => (None, address),
        };
        let port_ok = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "tarantool address '{host_port}' is not host:port (expected host:port or user:password@host:port)"
            ));
        }
        Ok(Address { host_port: host_port.to_string(), credentials })
    }

    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    /// The user the connection authenticates as (guest without credentials).
    pub fn user(&self) -> &str {
        self.credentials.as_ref().map_or("guest", |(user, _)| user)
    }
}

/// `user@host:port` or `host:port`: never the password.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some((user, _)) => write!(f, "{user}@{}", self.host_port),
            None => f.write_str(&self.host_port),
        }
    }
}

/// A connection to one server, reopened as needed.
pub struct Client {
    address: Address,
    /// Taken out while a request is in flight, so that a request abandoned halfway (its future
    /// dropped) takes its connection with it instead of leaving a reply to be read as the
    /// answer to the next request.
    connection: Mutex<Option<Connection>>,
    retrier: Retrier,
}

impl Client {
    /// Connects once (no retries: an unreachable server is reported at once) and pings.
    pub async fn connect(address: Address, retry: RetryWindow) -> Result<Client, Error> {
        let mut connection = Connection::open(&address).await?;
        connection.request(Request::Ping, &encode_map(Vec::new())).await?;
        let retrier = Retrier::new(format!("tarantool {address}"), retry);
        Ok(Client { address, connection: Mutex::new(Some(connection)), retrier })
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Calls a Lua function; returns what it returned (one value per return value).
    pub async fn call(&self, function: &str, args: Vec<Value>) -> Result<Vec<Value>, Error> {
        let body = encode_map(vec![(Key::FunctionName, function.into()), (Key::Tuple, Value::Array(args))]);
        let transient = |e: &Error| match e {
            Error::Io(message) => Some(message.clone()),
            Error::Server { .. } => None,
        };
        match self.retrier.run(|| self.try_request(Request::Call, &body), transient).await {
            Ok(reply) => data(reply),
            Err(gave_up) => match gave_up.error {
                Error::Io(ref message) => Err(Error::Io(format!("{message}{}", gave_up.retried_text()))),
                error => Err(error),
            },
        }
    }

    async fn try_request(&self, kind: Request, body: &[u8]) -> Result<Value, Error> {
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => Connection::open(&self.address).await?,
        };
        let reply = tokio::time::timeout(CALL_TIMEOUT, connection.request(kind, body))
            .await
            .map_err(|_| Error::Io(format!("no reply within {} s", CALL_TIMEOUT.as_secs())))?;
        match reply {
            Err(e @ Error::Io(_)) => Err(e),
            reply => {
                *slot = Some(connection);
                reply
            }
        }
    }
}

struct Connection {
    stream: TcpStream,
    sync: u64,
}

impl Connection {
    async fn open(address: &Address) -> Result<Connection, Error> {
        let io = |what: &str, e: std::io::Error| Error::Io(format!("{what}: {e}"));
        let opening = async {
            let stream = TcpStream::connect(&address.host_port).await.map_err(|e| io("connecting", e))?;
            stream.set_nodelay(true).map_err(|e| io("connecting", e))?;
            let mut connection = Connection { stream, sync: 0 };
            let mut greeting = [0u8; GREETING];
            connection.stream.read_exact(&mut greeting).await.map_err(|e| io("reading the greeting", e))?;
            let salt = parse_greeting(&greeting)?;
            Ok::<_, Error>((connection, salt))
        };
        let (mut connection, salt) =
            tokio::time::timeout(CONNECT_TIMEOUT, opening).await.map_err(|_| {
                Error::Io(format!("no connection and greeting within {} s", CONNECT_TIMEOUT.as_secs()))
            })??;
        if let Some((user, password)) = &address.credentials {
            let body = encode_map(vec![
                (Key::UserName, user.as_str().into()),
                (
                    Key::Tuple,
                    Value::Array(vec!["chap-sha1".into(), Value::Binary(scramble(&salt, password).to_vec())]),
                ),
            ]);
            let auth = tokio::time::timeout(CONNECT_TIMEOUT, connection.request(Request::Auth, &body))
                .await
                .map_err(|_| {
                    Error::Io(format!("no answer to authentication within {} s", CONNECT_TIMEOUT.as_secs()))
                })?;
            auth.map_err(|e| match e {
                Error::Server { code, message } => {
                    Error::Server { code, message: format!("authenticating as user '{user}': {message}") }
                }
                e => e,
            })?;
        }
        Ok(connection)
    }

    /// Sends one request and reads its reply: the body map of a success.
    async fn request(&mut self, kind: Request, body: &[u8]) -> Result<Value, Error> {
        self.sync += 1;
        let header = encode_map(vec![(Key::RequestType, (kind as u8).into()), (Key::Sync, self.sync.into())]);
        let length = u32::try_from(header.len() + body.len())
            .map_err(|_| Error::Io("request larger than 4 GiB".into()))?;
        let mut frame = Vec::with_capacity(5 + length as usize);
        frame.push(0xce);
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        let lost = |e: std::io::Error| Error::Io(format!("connection lost: {e}"));
        self.stream.write_all(&frame).await.map_err(lost)?;

        let mut prefix = [0u8; 5];
        self.stream.read_exact(&mut prefix).await.map_err(lost)?;
        if prefix[0] != 0xce {
            return Err(Error::Io(format!("not an IPROTO reply (length prefix byte {:#04x})", prefix[0])));
        }
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        if length > MAX_REPLY {
            return Err(Error::Io(format!("reply of {length} bytes, more than the {MAX_REPLY} accepted")));
        }
        let mut reply = vec![0u8; length as usize];
        self.stream.read_exact(&mut reply).await.map_err(lost)?;

        let malformed = |e: rmpv::decode::Error| Error::Io(format!("malformed reply: {e}"));
        let mut cursor = Cursor::new(&reply[..]);
        let header = rmpv::decode::read_value(&mut cursor).map_err(malformed)?;
        let body = if (cursor.position() as usize) < reply.len() {
            rmpv::decode::read_value(&mut cursor).map_err(malformed)?
        } else {
            Value::Map(Vec::new())
        };
        let sync = get(&header, Key::Sync).and_then(Value::as_u64);
        if sync != Some(self.sync) {
            return Err(Error::Io(format!("reply to request {sync:?}, expected {}", self.sync)));
        }
        match get(&header, Key::RequestType).and_then(Value::as_u64) {
            Some(0) => Ok(body),
            Some(code) if code & ERROR_FLAG != 0 => Err(Error::Server {
                code: (code & !ERROR_FLAG) as u32,
                message: get(&body, Key::ErrorMessage)
                    .and_then(Value::as_str)
                    .unwrap_or("error without a message")
                    .to_string(),
            }),
            code => Err(Error::Io(format!("unexpected reply code {code:?}"))),
        }
    }
}

/// The base64 salt from the second line of the greeting; the first must name Tarantool.
fn parse_greeting(greeting: &[u8; GREETING]) -> Result<Vec<u8>, Error> {
    let line = |range: std::ops::Range<usize>| String::from_utf8_lossy(&greeting[range]).trim().to_string();
    let banner = line(0..64);
    if !banner.starts_with("Tarantool ") {
        return Err(Error::Io(format!("not a Tarantool IPROTO port (it greets with '{banner}')")));
    }
    let salt = base64::engine::general_purpose::STANDARD
        .decode(line(64..128))
        .map_err(|e| Error::Io(format!("malformed greeting salt: {e}")))?;
    if salt.len() < 20 {
        return Err(Error::Io(format!("greeting salt of {} bytes, expected at least 20", salt.len())));
    }
    Ok(salt)
}

/// chap-sha1: sha1(password) xor sha1(salt ++ sha1(sha1(password))), salt cut to 20 bytes.
fn scramble(salt: &[u8], password: &str) -> [u8; 20] {
    let hash1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
    let hash2 = Sha1::digest(hash1);
    let hash3: [u8; 20] = Sha1::new().chain_update(&salt[..20]).chain_update(hash2).finalize().into();
    std::array::from_fn(|i| hash1[i] ^ hash3[i])
}

fn data(body: Value) -> Result<Vec<Value>, Error> {
    match body {
        Value::Map(entries) => entries
            .into_iter()
            .find(|(key, _)| key.as_u64() == Some(Key::Data as u64))
            .and_then(|(_, data)| match data {
                Value::Array(values) => Some(values),
                _ => None,
            })
            .ok_or_else(|| Error::Io("reply to CALL without data".into())),
        _ => Err(Error::Io("reply body is not a map".into())),
    }
}

fn get(map: &Value, key: Key) -> Option<&Value> {
    map.as_map()?.iter().find(|(k, _)| k.as_u64() == Some(key as u64)).map(|(_, v)| v)
}

fn encode_map(entries: Vec<(Key, Value)>) -> Vec<u8> {
    let map = Value::Map(entries.into_iter().map(|(key, value)| (key.into(), value)).collect());
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &map).expect("writing to a Vec cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Address::parse("refacen:s3:cr@t@db.example:3301").unwrap();
        assert_eq!(a.to_string(), "refacen@db.example:3301");
        assert_eq!(a.credentials, Some(("refacen".into(), "s3:cr@t".into())));
        assert_eq!(Address::parse("[::1]:3301").unwrap().to_string(), "[::1]:3301");
        assert!(Address::parse("localhost").is_err());
        let e = Address::parse("u:secret@localhost").err().expect("no port");
        assert!(e.contains("'localhost'") && !e.contains("secret"), "{e}");
    }
}
