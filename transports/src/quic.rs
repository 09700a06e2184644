//! The QUIC transport (quinn, rustls with the ring provider): one endpoint per party, mutual TLS
//! where every party trusts exactly the other parties' self-signed certificates and maps the
//! peer's certificate to its party id, and one long-lived unidirectional stream per direction
//! carrying length-prefixed envelope frames.
//!
//! The lower party id dials the higher one; the dialled side identifies the caller by its client
//! certificate (anything else fails the handshake and is logged with the peer address). The
//! endpoint runs on a runtime of its own, so a party's long compute never starves its connections
//! (reference/stack.md §3.3).
//!
//! Flow-control windows are sized for the WAN presets: the bandwidth-delay product of the paper's
//! WAN is 40 MB/s × 58 ms ≈ 2.3 MB, over quinn's default 1.25 MB stream window (which would cap a
//! stream near 21 MB/s there); 8 MiB per stream and 16 MiB per connection leave room for
//! 110 ms round trips at 70 MB/s.

use crate::{
    Delivery, Endpoint, Envelope, Meter, Metered, PartyId, Transport, TransportError, destination,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

const ALPN: &[u8] = b"securenn/1";
/// Per-stream receive window (see the module docs).
const STREAM_WINDOW: u32 = 8 << 20;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Idle timeout, with keep-alives well below it on both sides.
const IDLE: Duration = Duration::from_secs(15);
const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Largest frame accepted from a peer (a frame holds one envelope): 1 GiB, above the largest
/// message of the paper's networks at batch 128 (network C's masked im2col matrix, 15 MB) with
/// room for larger batches, and a bound on what a garbage length prefix can make us allocate.
const MAX_FRAME: u32 = 1 << 30;

/// A party's certificate and private key (DER).
#[derive(Clone)]
pub struct Identity {
    pub cert: Vec<u8>,
    /// PKCS#8 DER; secret.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({} byte certificate, key redacted)",
            self.cert.len()
        )
    }
}

/// The TLS server name of a party (its certificate's subject alternative name).
pub fn server_name(p: PartyId) -> String {
    format!("party{}", p.0)
}

/// A fresh self-signed certificate and key for `party`.
pub fn generate_identity(party: PartyId) -> Result<Identity, TransportError> {
    let ck = rcgen::generate_simple_self_signed(vec![server_name(party)]).map_err(|e| {
        TransportError::Connection {
            peer: party,
            reason: format!("cannot generate a certificate: {e}"),
        }
    })?;
    Ok(Identity {
        cert: ck.cert.der().to_vec(),
        key: ck.signing_key.serialize_der(),
    })
}

/// Where the parties are and who they are.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    pub me: PartyId,
    /// Every party's address, by id.
    pub addrs: Vec<SocketAddr>,
    /// Every party's certificate (DER), by id.
    pub certs: Vec<Vec<u8>>,
    /// This party's certificate and key.
    pub identity: Identity,
    /// How long to wait for every peer to connect.
    pub connect_timeout: Duration,
}

/// A running QUIC endpoint: keep it alive for the session, then [`QuicNode::shutdown`].
pub struct QuicNode {
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: quinn::Endpoint,
    connections: Vec<(PartyId, quinn::Connection)>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    me: PartyId,
}

struct QuicTransport {
    me: PartyId,
    parties: usize,
    /// One writer queue per peer (None for this party).
    queues: Vec<Option<UnboundedSender<Envelope>>>,
}

fn conn_err(peer: PartyId, reason: impl std::fmt::Display) -> TransportError {
    TransportError::Connection {
        peer,
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(IDLE).expect("15 s fits")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(t)
}

/// TLS configurations trusting exactly the other parties' certificates.
fn tls(cfg: &QuicConfig) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let me = cfg.me;
    let bad = |e: &dyn std::fmt::Display| conn_err(me, format!("TLS configuration: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in cfg.certs.iter().enumerate() {
        if i != me.index() {
            roots
                .add(CertificateDer::from(c.clone()))
                .map_err(|e| bad(&e))?;
        }
    }
    let roots = Arc::new(roots);
    let chain = vec![CertificateDer::from(cfg.identity.cert.clone())];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cfg.identity.key.clone()));
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| bad(&e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key())
        .map_err(|e| bad(&e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key())
        .map_err(|e| bad(&e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(|e| bad(&e))?,
    ));
    server.transport_config(transport_config());
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(|e| bad(&e))?,
    ));
    client.transport_config(transport_config());
    Ok((server, client))
}

/// The party whose certificate `conn`'s peer presented.
fn identify(conn: &quinn::Connection, certs: &[Vec<u8>]) -> Option<PartyId> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let presented = chain.first()?;
    certs
        .iter()
        .position(|c| c.as_slice() == presented.as_ref())
        .map(|i| PartyId(i as u8))
}

impl QuicNode {
    /// Bind this party's endpoint, connect to every peer (waiting up to the configured timeout),
    /// and return its transport endpoint, metered by `meter`.
    pub fn start(
        cfg: QuicConfig,
        meter: &Arc<Meter>,
    ) -> Result<(Endpoint, QuicNode), TransportError> {
        let me = cfg.me;
        let n = cfg.addrs.len();
        if cfg.certs.len() != n || me.index() >= n {
            return Err(conn_err(
                me,
                format!(
                    "{n} addresses, {} certificates, party {me}",
                    cfg.certs.len()
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("quic-{me}"))
            .enable_all()
            .build()
            .map_err(|e| conn_err(me, e))?;
        let (server, client) = tls(&cfg)?;
        let (in_tx, incoming) = unbounded_channel::<Delivery>();
        let (endpoint, connections) = runtime.block_on(async {
            let mut endpoint = quinn::Endpoint::server(server, cfg.addrs[me.index()])
                .map_err(|e| conn_err(me, format!("cannot bind {}: {e}", cfg.addrs[me.index()])))?;
            endpoint.set_default_client_config(client);
            let connected = std::sync::Mutex::new(Vec::new());
            let wait = connect_all(&endpoint, &cfg, &connected);
            let connections = tokio::time::timeout(cfg.connect_timeout, wait).await.map_err(|_| {
                let have = connected.lock().map(|c| c.clone()).unwrap_or_default();
                let missing: Vec<PartyId> =
                    (0..n as u8).map(PartyId).filter(|p| *p != me && !have.contains(p)).collect();
                let names: Vec<String> =
                    missing.iter().map(|p| format!("{p} at {}", cfg.addrs[p.index()])).collect();
                conn_err(
                    missing.first().copied().unwrap_or(me),
                    format!(
                        "{me} waited {:?} and never connected to {} (not running, unreachable, or \
                         presenting another certificate)",
                        cfg.connect_timeout,
                        names.join(", ")
                    ),
                )
            })??;
            Ok::<_, TransportError>((endpoint, connections))
        })?;
        // One stream per direction: open ours, accept theirs.
        let mut queues: Vec<Option<UnboundedSender<Envelope>>> = (0..n).map(|_| None).collect();
        let mut writers = Vec::new();
        for (peer, conn) in &connections {
            let (q_tx, q_rx) = unbounded_channel::<Envelope>();
            queues[peer.index()] = Some(q_tx);
            writers.push(runtime.spawn(write_frames(*peer, conn.clone(), q_rx, in_tx.clone(), me)));
            runtime.spawn(read_frames(*peer, conn.clone(), in_tx.clone()));
        }
        let raw: Arc<dyn Transport> = Arc::new(QuicTransport {
            me,
            parties: n,
            queues,
        });
        let ep = Endpoint {
            transport: Arc::new(Metered::new(raw, meter.clone())),
            incoming,
        };
        Ok((
            ep,
            QuicNode {
                runtime: Some(runtime),
                endpoint,
                connections,
                writers,
                me,
            },
        ))
    }

    /// Bytes QUIC itself put on the wire per peer (UDP payloads, with headers, retransmissions
    /// and acknowledgements), beside the envelope payloads the meter counts.
    pub fn wire_bytes(&self) -> Vec<(PartyId, u64)> {
        self.connections
            .iter()
            .map(|(p, c)| (*p, c.stats().udp_tx.bytes))
            .collect()
    }

    /// Finish every stream (after the envelopes queued so far are written and acknowledged),
    /// close the connections and wait until the endpoint is idle: nothing in flight is lost.
    /// Drop the party's transport first so the writers see the end of their queues.
    /// May be called from inside another async runtime (it blocks on a thread of its own).
    pub fn shutdown(mut self) {
        let Some(rt) = self.runtime.take() else {
            return;
        };
        let writers = std::mem::take(&mut self.writers);
        let (endpoint, me) = (self.endpoint.clone(), self.me);
        let closer = std::thread::spawn(move || {
            rt.block_on(async {
                for w in writers {
                    let _ = tokio::time::timeout(IDLE, w).await;
                }
                endpoint.close(0u32.into(), b"done");
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let _ = closer.join();
        tracing::debug!(party = %me, "QUIC endpoint closed");
    }
}

/// Dial every higher party (retrying until it is up), accept every lower one.
async fn connect_all(
    endpoint: &quinn::Endpoint,
    cfg: &QuicConfig,
    connected: &std::sync::Mutex<Vec<PartyId>>,
) -> Result<Vec<(PartyId, quinn::Connection)>, TransportError> {
    let me = cfg.me;
    let n = cfg.addrs.len();
    let mut out = Vec::new();
    let lower = (0..me.0).count();
    let accept = async {
        let mut got = Vec::new();
        while got.len() < lower {
            let Some(incoming) = endpoint.accept().await else {
                return Err(conn_err(me, "endpoint closed while waiting for peers"));
            };
            let addr = incoming.remote_address();
            match incoming.await {
                Ok(conn) => match identify(&conn, &cfg.certs).filter(|p| *p < me) {
                    Some(p) if !got.iter().any(|(q, _)| *q == p) => {
                        if let Ok(mut c) = connected.lock() {
                            c.push(p);
                        }
                        got.push((p, conn));
                    }
                    _ => {
                        tracing::warn!(party = %me, %addr, "refused a connection: not a lower party's certificate");
                        conn.close(1u32.into(), b"unknown party");
                    }
                },
                Err(e) => tracing::warn!(party = %me, %addr, error = %e, "refused a connection"),
            }
        }
        Ok(got)
    };
    let dial = async {
        let mut got = Vec::new();
        for p in (me.0 + 1)..n as u8 {
            let peer = PartyId(p);
            loop {
                let attempt = endpoint
                    .connect(cfg.addrs[peer.index()], &server_name(peer))
                    .map_err(|e| conn_err(peer, e))?;
                match attempt.await {
                    Ok(conn) if identify(&conn, &cfg.certs) == Some(peer) => {
                        if let Ok(mut c) = connected.lock() {
                            c.push(peer);
                        }
                        got.push((peer, conn));
                        break;
                    }
                    Ok(conn) => {
                        conn.close(1u32.into(), b"wrong party");
                        return Err(conn_err(peer, "answered with another party's certificate"));
                    }
                    // Not up yet (or refusing us): try again until the connect timeout.
                    Err(e) => {
                        tracing::debug!(party = %me, peer = %peer, error = %e, "connect failed, retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        Ok::<_, TransportError>(got)
    };
    let (a, d) = tokio::join!(accept, dial);
    out.extend(a?);
    out.extend(d?);
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}

/// Write this party's envelopes to `peer` on one stream, in order; finish it when the queue ends.
async fn write_frames(
    peer: PartyId,
    conn: quinn::Connection,
    mut queue: UnboundedReceiver<Envelope>,
    errors: UnboundedSender<Delivery>,
    me: PartyId,
) {
    let result = async {
        let mut s = conn.open_uni().await.map_err(|e| conn_err(peer, e))?;
        // Streams are lazy: the peer sees ours only once we write, so say who we are first.
        s.write_all(&[me.0]).await.map_err(|e| conn_err(peer, e))?;
        let mut buf = Vec::new();
        while let Some(env) = queue.recv().await {
            buf.clear();
            buf.extend_from_slice(&[0; 4]);
            env.encode_frame(&mut buf);
            let len = (buf.len() - 4) as u32;
            buf[..4].copy_from_slice(&len.to_le_bytes());
            s.write_all(&buf).await.map_err(|e| conn_err(peer, e))?;
        }
        s.finish().map_err(|e| conn_err(peer, e))?;
        let _ = s.stopped().await;
        Ok::<_, TransportError>(())
    }
    .await;
    if let Err(e) = result {
        let _ = errors.send(Err(e));
    }
}

/// Read `peer`'s envelopes from its stream into this party's incoming queue. A clean end of the
/// stream ends quietly; a broken connection or a bad frame is a typed error naming the peer.
async fn read_frames(peer: PartyId, conn: quinn::Connection, incoming: UnboundedSender<Delivery>) {
    let result = async {
        let mut s = conn.accept_uni().await.map_err(|e| conn_err(peer, e))?;
        let mut who = [0u8; 1];
        s.read_exact(&mut who)
            .await
            .map_err(|e| conn_err(peer, e))?;
        if who[0] != peer.0 {
            return Err(TransportError::Malformed {
                peer,
                reason: format!("stream opened as party {}", who[0]),
            });
        }
        loop {
            let mut len = [0u8; 4];
            match s.read_exact(&mut len).await {
                Ok(()) => {}
                Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
                Err(e) => return Err(conn_err(peer, e)),
            }
            let len = u32::from_le_bytes(len);
            if len > MAX_FRAME {
                return Err(TransportError::Malformed {
                    peer,
                    reason: format!("frame of {len} bytes"),
                });
            }
            let mut frame = vec![0u8; len as usize];
            s.read_exact(&mut frame)
                .await
                .map_err(|e| TransportError::Malformed {
                    peer,
                    reason: format!("frame cut short: {e}"),
                })?;
            let env = Envelope::decode_frame(&frame).map_err(|e| TransportError::Malformed {
                peer,
                reason: e.to_string(),
            })?;
            if env.from != peer {
                return Err(TransportError::Malformed {
                    peer,
                    reason: format!("envelope claims to be from {}", env.from),
                });
            }
            if incoming.send(Ok(env)).is_err() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = incoming.send(Err(e));
    }
}

impl Transport for QuicTransport {
    fn party(&self) -> PartyId {
        self.me
    }

    fn parties(&self) -> usize {
        self.parties
    }

    fn send(&self, env: Envelope) -> Result<(), TransportError> {
        let Some(q) = destination(self.me, &env, &self.queues)? else {
            return Err(TransportError::SelfSend {
                from: self.me,
                key: env.key,
            });
        };
        let (peer, key) = (env.to, env.key.clone());
        q.send(env)
            .map_err(|_| TransportError::PeerGone { peer, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer with the right certificate that then sends a garbage frame: a typed error naming
    /// it, not a panic.
    #[test]
    fn garbage_frame_is_a_typed_error_naming_the_peer() {
        let ids = [
            generate_identity(PartyId(0)).unwrap(),
            generate_identity(PartyId(1)).unwrap(),
        ];
        let addrs: Vec<SocketAddr> = (0..2)
            .map(|_| {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
            })
            .collect();
        let certs: Vec<Vec<u8>> = ids.iter().map(|i| i.cert.clone()).collect();
        let cfg = |me: u8| QuicConfig {
            me: PartyId(me),
            addrs: addrs.clone(),
            certs: certs.clone(),
            identity: ids[me as usize].clone(),
            connect_timeout: Duration::from_secs(5),
        };
        // Party 1 is a real node; party 0 is a raw client with party 0's identity.
        let node1 = std::thread::spawn({
            let c = cfg(1);
            move || QuicNode::start(c, &Meter::new(2))
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c0 = cfg(0);
        let conn = rt.block_on(async {
            let (_, client) = tls(&c0).unwrap();
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(client);
            loop {
                if let Ok(conn) = ep
                    .connect(c0.addrs[1], &server_name(PartyId(1)))
                    .unwrap()
                    .await
                {
                    break (ep, conn);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let (mut endpoint, node) = node1.join().unwrap().unwrap();
        rt.block_on(async {
            let mut s = conn.1.open_uni().await.unwrap();
            s.write_all(&[0]).await.unwrap();
            s.write_all(&10u32.to_le_bytes()).await.unwrap();
            s.write_all(b"0123456789").await.unwrap();
            s.finish().unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), endpoint.incoming.recv())
                .await
                .unwrap()
                .unwrap();
            match got {
                Err(TransportError::Malformed { peer, .. }) => assert_eq!(peer, PartyId(0)),
                other => panic!("expected a malformed-frame error, got {other:?}"),
            }
        });
        drop(endpoint);
        rt.block_on(async {
            conn.0.close(0u32.into(), b"bye");
            conn.0.wait_idle().await;
        });
        node.shutdown();
    }
}
