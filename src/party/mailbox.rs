//! Routing of incoming envelopes to the receives that wait for them, by (session, sender, key),
//! and the checks that keep a broken or hostile peer from parking in this party's memory what
//! cannot belong to the running job.
//!
//! An envelope is refused, and its sender cut off (every receive from it fails with the reason,
//! and the transport closes the connection), when it names another session, when its key is
//! not a rendezvous key (printable ASCII, at most [`MAX_KEY_LEN`] bytes, with a `#` sequence
//! number), when it repeats a key, when its causal depth is beyond [`MAX_DEPTH`], or when it is
//! addressed to another party. An envelope of a job that has finished is dropped: after a
//! failure, peers legitimately send on until they hear of it, and cutting them off then would
//! close the connection before this party's own abort notice is delivered. Every byte a peer
//! delivered is released to the transport's [`Backlog`] once it is consumed or dropped; a
//! peer whose backlog is full while this party waits for its next message is flooding, and is
//! cut off too.
//!
//! A peer's abort notice, or a transport failure naming a peer, ends the session: every
//! receive, from any peer, fails at once with [`ProtocolError::Aborted`], naming the party that
//! failed or stopped first (not the peer this party happened to wait on, which would only
//! report the same failure later and second-hand).

use crate::channel::ProtocolError;
use futures::channel::oneshot;
use securenn_transports::{Backlog, Envelope, PartyId, Transport, TransportError, printable};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Slot = (u64, PartyId, String);

/// Longest rendezvous key accepted: operation paths are a few dozen bytes (the deepest, inside
/// a max-pooling layer's DReLU, about 80).
pub const MAX_KEY_LEN: usize = 512;

/// Deepest causal depth accepted from a peer: a job adds tens to a few hundred rounds, so 2^40
/// leaves room for any session, and a depth near u64::MAX (which would overflow the next send)
/// is refused.
pub const MAX_DEPTH: u64 = 1 << 40;

/// Longest peer-chosen text (a key, an abort reason) written into a log line or an error: an
/// abort reason is the peer's own error, which may quote another party's.
pub const MAX_PEER_TEXT: usize = 1000;

/// Envelopes that arrived before anyone asked, and receives that wait for envelopes.
pub struct Mailbox {
    me: PartyId,
    transport: Arc<dyn Transport>,
    backlog: Arc<Backlog>,
    arrived: HashMap<Slot, Envelope>,
    /// Bytes in `arrived` as the backlog counts them ([`Envelope::held_bytes`]), per peer.
    held: HashMap<PartyId, u64>,
    waiting: HashMap<Slot, oneshot::Sender<Result<Envelope, ProtocolError>>>,
    gone: HashMap<PartyId, String>,
    /// The session, once set up: envelopes of any other are refused.
    session: Option<u64>,
    /// Root paths of the jobs (and the setup) that have finished.
    finished: HashSet<String>,
    /// The session was aborted: by whom, and why (the reason names that party first).
    aborted: Option<(PartyId, String)>,
}

/// The job an envelope belongs to: its key's first path segment.
fn root(key: &str) -> &str {
    let end = key.find(['/', '#']).unwrap_or(key.len());
    &key[..end]
}

/// Whether `text` begins with `party`'s name as a word ("P2 stopped ...").
fn names_first(text: &str, party: PartyId) -> bool {
    text.strip_prefix(&party.to_string())
        .is_some_and(|rest| rest.starts_with([' ', ':']))
}

/// Who a peer's abort notice blames, and the reason to report, naming that party first. The
/// notice is `from`'s own error: when it names `from` first ("P2 stopped (SIGTERM)") it is
/// quoted as is; when it names another party first, `from` relays that party's failure (it
/// heard of it before this party did), quoted as `from`'s report; otherwise `from` gave up.
fn blame(from: PartyId, text: &str, parties: usize) -> (PartyId, String) {
    if names_first(text, from) {
        return (from, text.to_string());
    }
    match (0..parties)
        .map(|p| PartyId(p as u8))
        .find(|&p| names_first(text, p))
    {
        Some(first) => (first, format!("{text} (as {from} reports)")),
        None => (from, format!("{from} gave up: {text}")),
    }
}

/// Why `key` is not a rendezvous key, if it is not.
fn malformed_key(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Some(format!(
            "a key of {} bytes (keys have 1 to {MAX_KEY_LEN})",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "the key \"{}\", with characters outside printable ASCII",
            printable(key, MAX_PEER_TEXT)
        ));
    }
    let seq = key.rsplit_once('#').map(|(_, s)| s);
    if !seq.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
        return Some(format!(
            "the key \"{}\", without a #sequence number",
            printable(key, MAX_PEER_TEXT)
        ));
    }
    None
}

impl Mailbox {
    /// The mailbox of party `me`, releasing consumed bytes to `backlog` and cutting misbehaving
    /// peers off through `transport`.
    pub fn new(me: PartyId, transport: Arc<dyn Transport>, backlog: Arc<Backlog>) -> Self {
        Self {
            me,
            transport,
            backlog,
            arrived: HashMap::new(),
            held: HashMap::new(),
            waiting: HashMap::new(),
            gone: HashMap::new(),
            session: None,
            finished: HashSet::new(),
            aborted: None,
        }
    }

    /// The slots of the kept envelopes that `pick` selects.
    fn arrived_where(&self, pick: impl Fn(&Slot) -> bool) -> Vec<Slot> {
        self.arrived.keys().filter(|s| pick(s)).cloned().collect()
    }

    /// This party's session from now on: envelopes of any other session, already here or still
    /// to come, are refused.
    pub fn set_session(&mut self, session: u64) {
        self.session = Some(session);
        for slot in self.arrived_where(|s| s.0 != session) {
            let reason = format!(
                "{} sent an envelope of session {}, not of this session ({session})",
                slot.1, slot.0
            );
            self.cut_off(slot.1, reason);
        }
    }

    /// The job (or setup) at root path `root` has ended: later envelopes of it are refused, and
    /// envelopes of it nobody asked for are dropped. Returns how many were dropped (after a
    /// successful job, non-zero means a protocol bug).
    pub fn finish(&mut self, root_path: &str) -> usize {
        self.finished.insert(root_path.to_string());
        let left = self.arrived_where(|s| root(&s.2) == root_path);
        for slot in &left {
            self.take_arrived(slot);
        }
        left.len()
    }

    /// Why `env` cannot belong to this party's running job, if it cannot.
    fn refusal(&self, env: &Envelope) -> Option<String> {
        let from = env.from;
        if env.to != self.me {
            return Some(format!(
                "{from} sent {} an envelope addressed to {}",
                self.me, env.to
            ));
        }
        if let Some(s) = self.session.filter(|s| *s != env.session) {
            return Some(format!(
                "{from} sent an envelope of session {}, not of this session ({s})",
                env.session
            ));
        }
        if let Some(why) = malformed_key(&env.key) {
            return Some(format!("{from} sent {why}"));
        }
        if env.depth > MAX_DEPTH {
            return Some(format!(
                "{from} sent a causal depth of {}, beyond any job's (at most {MAX_DEPTH})",
                env.depth
            ));
        }
        None
    }

    /// Hand an incoming envelope to its receive, or keep it until asked for; refuse it (and cut
    /// its sender off) if it cannot belong to the running job.
    pub fn deliver(&mut self, env: Envelope) {
        let (from, bytes) = (env.from, env.held_bytes());
        if self.gone.contains_key(&from) || self.aborted.is_some() {
            // Already cut off or failed, or the session aborted: nothing of it is kept.
            self.backlog.release(from, bytes);
            return;
        }
        if let Some(reason) = self.refusal(&env) {
            self.backlog.release(from, bytes);
            self.cut_off(from, reason);
            return;
        }
        if self.finished.contains(root(&env.key)) {
            // Late: sent before the peer learnt that this party's job ended. Nothing is kept.
            tracing::debug!(party = %self.me, from = %from, key = %env.key, "envelope of a finished job dropped");
            self.backlog.release(from, bytes);
            return;
        }
        let slot = (env.session, env.from, env.key.clone());
        if let Some(tx) = self.waiting.remove(&slot) {
            self.backlog.release(from, bytes);
            // The receiver may have timed out meanwhile; then the envelope is dropped.
            let _ = tx.send(Ok(env));
            return;
        }
        match self.arrived.entry(slot) {
            Entry::Occupied(o) => {
                let reason = format!("{from} sent {} twice", o.key().2);
                self.backlog.release(from, bytes);
                self.cut_off(from, reason);
            }
            Entry::Vacant(v) => {
                v.insert(env);
                *self.held.entry(from).or_default() += bytes;
                self.check_flood(from);
            }
        }
    }

    /// `env` is a peer's notice that it gave up (its payload the reason, as the peer wrote it):
    /// fail every receive, from any peer, naming the party that failed first, with the reason
    /// escaped and capped.
    pub fn gave_up(&mut self, env: Envelope) {
        self.backlog.release(env.from, env.held_bytes());
        let text = printable(&String::from_utf8_lossy(&env.payload), MAX_PEER_TEXT);
        let (by, reason) = blame(env.from, &text, self.transport.parties());
        self.abort(by, reason);
    }

    /// The session is over, because of `by`: fail every receive waiting, and later ones, with
    /// `reason`, and drop everything kept. The first abort heard is the one reported.
    fn abort(&mut self, by: PartyId, reason: String) {
        let (by, reason) = self.aborted.get_or_insert((by, reason)).clone();
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Err(ProtocolError::Aborted {
                party: self.me,
                by,
                reason: reason.clone(),
            }));
        }
        for slot in &self.arrived_where(|_| true) {
            self.take_arrived(slot);
        }
    }

    /// Whether the session was aborted (a peer gave up, or a peer's connection failed).
    pub fn is_aborted(&self) -> bool {
        self.aborted.is_some()
    }

    /// The transport paused `peer`'s stream at the backlog's cap.
    pub fn backlogged(&mut self, peer: PartyId) {
        self.check_flood(peer);
    }

    /// `peer` is flooding if its stream is paused at the cap, everything it delivered is here
    /// (none still on its way to the mailbox), and a receive waits for a message of it that
    /// can only come after what is queued: nothing this party does will free the stream.
    fn check_flood(&mut self, peer: PartyId) {
        let held = self.held.get(&peer).copied().unwrap_or(0);
        if self.backlog.is_blocked(peer)
            && held >= self.backlog.queued(peer)
            && self.waiting.keys().any(|s| s.1 == peer)
        {
            let me = self.me;
            let reason = format!(
                "{peer} sent {held} bytes that {me} has not asked for, up to the cap of {} \
                 bytes, while {me} waits for its next message: a flood (or a job that runs further \
                 ahead than the cap allows: raise max_queued_mib in [limits])",
                self.backlog.cap()
            );
            self.cut_off(peer, reason);
        }
    }

    /// Refuse everything more from `peer` and close its connection.
    fn cut_off(&mut self, peer: PartyId, reason: String) {
        tracing::warn!(party = %self.me, peer = %peer, reason = %printable(&reason, MAX_PEER_TEXT), "peer refused");
        self.transport.cut_off(peer, &reason);
        self.fail(peer, reason);
    }

    /// A peer's connection failed: fail every receive waiting on it, and later ones too.
    pub fn fail_peer(&mut self, err: &TransportError) {
        if let TransportError::Closed { peer, reason } = err {
            // The peer's last word: its abort notice, if that was not read before the close.
            let (by, reason) = blame(*peer, reason, self.transport.parties());
            self.abort(by, reason);
            return;
        }
        let peer = match err {
            TransportError::PeerGone { peer, .. }
            | TransportError::Malformed { peer, .. }
            | TransportError::Connection { peer, .. }
            | TransportError::Closed { peer, .. }
            | TransportError::Backlog { peer, .. } => *peer,
            TransportError::NoSuchParty { to, .. } => *to,
            // Both ends of a cut link learn of it; each loses the other end.
            TransportError::Cut { from, to, .. } => {
                if *from == self.me {
                    *to
                } else {
                    *from
                }
            }
            TransportError::SelfSend { from, .. } => *from,
        };
        let reason = err.to_string();
        // Receives from `peer` say it disconnected; those from the others name it too.
        self.fail(peer, reason.clone());
        let reason = if names_first(&reason, peer) {
            reason
        } else {
            format!("{peer} disconnected: {reason}")
        };
        self.abort(peer, reason);
    }

    /// `peer` can no longer be heard from: fail every receive waiting on it, and later ones,
    /// and drop what it sent that nobody asked for.
    pub fn fail(&mut self, peer: PartyId, reason: String) {
        let slots: Vec<Slot> = self
            .waiting
            .keys()
            .filter(|s| s.1 == peer)
            .cloned()
            .collect();
        for slot in slots {
            if let Some(tx) = self.waiting.remove(&slot) {
                let _ = tx.send(Err(self.gone_error(peer, &slot.2, &reason)));
            }
        }
        for slot in &self.arrived_where(|s| s.1 == peer) {
            self.take_arrived(slot);
        }
        self.gone.entry(peer).or_insert(reason);
    }

    fn gone_error(&self, peer: PartyId, key: &str, reason: &str) -> ProtocolError {
        ProtocolError::PeerGone {
            party: self.me,
            peer,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Remove a kept envelope, releasing its bytes.
    fn take_arrived(&mut self, slot: &Slot) -> Option<Envelope> {
        let env = self.arrived.remove(slot)?;
        let bytes = env.held_bytes();
        if let Some(h) = self.held.get_mut(&env.from) {
            *h = h.saturating_sub(bytes);
        }
        self.backlog.release(env.from, bytes);
        Some(env)
    }

    /// Ask for the envelope at `(session, from, key)`.
    pub fn expect(
        &mut self,
        session: u64,
        from: PartyId,
        key: String,
    ) -> oneshot::Receiver<Result<Envelope, ProtocolError>> {
        let (tx, rx) = oneshot::channel();
        let slot = (session, from, key);
        if let Some(env) = self.take_arrived(&slot) {
            let _ = tx.send(Ok(env));
        } else if let Some(reason) = self.gone.get(&from) {
            let _ = tx.send(Err(self.gone_error(from, &slot.2, reason)));
        } else if let Some((by, reason)) = &self.aborted {
            let _ = tx.send(Err(ProtocolError::Aborted {
                party: self.me,
                by: *by,
                reason: reason.clone(),
            }));
        } else {
            self.waiting.insert(slot, tx);
            self.check_flood(from);
        }
        rx
    }

    /// Forget a receive that gave up.
    pub fn cancel(&mut self, session: u64, from: PartyId, key: &str) {
        self.waiting.remove(&(session, from, key.to_string()));
    }

    /// Envelopes received but never asked for (non-zero after a job means a protocol bug).
    pub fn unclaimed(&self) -> usize {
        self.arrived.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use securenn_transports::{MemoryNetwork, Meter};

    fn mailbox(cap: u64) -> (Mailbox, Arc<Backlog>) {
        let eps = MemoryNetwork::endpoints(3, &Meter::new(3));
        let backlog = Backlog::new(3, cap);
        let t = eps.into_iter().nth(1).unwrap().transport;
        (Mailbox::new(PartyId(1), t, backlog.clone()), backlog)
    }

    fn env(from: u8, key: &str, len: usize) -> Envelope {
        Envelope {
            session: 7,
            from: PartyId(from),
            to: PartyId(1),
            key: key.into(),
            depth: 1,
            arrival: 0,
            payload: vec![0; len],
        }
    }

    fn refused(mb: &mut Mailbox, e: Envelope, why: &str) {
        let from = e.from;
        mb.deliver(e);
        let rx = mb.expect(7, from, "job/x#9".into());
        match futures::executor::block_on(rx).unwrap() {
            Err(ProtocolError::PeerGone { reason, peer, .. }) => {
                assert_eq!(peer, from);
                assert!(reason.contains(why), "{reason} lacks {why}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(root("infer~1/batch/0.dense#3"), "infer~1");
        assert_eq!(root("setup#0"), "setup");
        assert!(malformed_key("infer/batch~2/3.relu/drelu#12").is_none());
        assert!(malformed_key("infer/x").is_some());
        assert!(malformed_key("infer/x#").is_some());
        assert!(malformed_key("in fer#1").is_some());
        assert!(malformed_key("a\u{1b}[2J#1").is_some());
        assert!(malformed_key(&format!("{}#1", "a".repeat(MAX_KEY_LEN))).is_some());
    }

    #[test]
    fn what_cannot_belong_to_the_job_cuts_the_sender_off() {
        let (mut mb, _) = mailbox(u64::MAX);
        mb.set_session(7);
        let mut other = env(0, "job/a#0", 8);
        other.session = 8;
        refused(&mut mb, other, "session 8");
        let (mut mb, _) = mailbox(u64::MAX);
        mb.set_session(7);
        refused(&mut mb, env(2, "job/a", 8), "#sequence");
        let (mut mb, _) = mailbox(u64::MAX);
        let mut deep = env(0, "job/a#0", 8);
        deep.depth = u64::MAX;
        refused(&mut mb, deep, "causal depth");
        let (mut mb, _) = mailbox(u64::MAX);
        mb.deliver(env(0, "job/a#0", 8));
        refused(&mut mb, env(0, "job/a#0", 8), "twice");
        let (mut mb, _) = mailbox(u64::MAX);
        let mut mis = env(0, "job/a#0", 8);
        mis.to = PartyId(2);
        refused(&mut mb, mis, "addressed to P2");
    }

    /// Finding 7 of the security review: a peer's abort reason reached the logs unescaped and
    /// unbounded. It is escaped (no terminal control sequences) and capped.
    #[test]
    fn abort_reasons_are_escaped_and_capped() {
        let (mut mb, _) = mailbox(u64::MAX);
        let reason = format!("\u{1b}[2J\r\nFAKE LOG LINE{}", "x".repeat(100_000));
        let mut abort = env(0, "!abort", 0);
        abort.payload = reason.into_bytes();
        mb.gave_up(abort);
        let rx = mb.expect(7, PartyId(0), "job/a#0".into());
        match futures::executor::block_on(rx).unwrap() {
            Err(ProtocolError::Aborted { reason, by, .. }) => {
                assert_eq!(by, PartyId(0));
                assert!(
                    reason.starts_with("P0 gave up: \\u{1b}[2J\\r\\nFAKE"),
                    "{reason}"
                );
                assert!(!reason.contains(['\u{1b}', '\n', '\r']));
                assert!(reason.len() < MAX_PEER_TEXT + 100, "{} bytes", reason.len());
            }
            other => panic!("expected the peer's abort, got {other:?}"),
        }
    }

    /// An abort notice fails every receive waiting, from any peer, and later ones, naming the
    /// party that failed first: the sender, or the party whose failure it relays.
    #[test]
    fn an_abort_fails_every_receive_naming_who_failed_first() {
        assert_eq!(
            blame(PartyId(2), "P2 stopped (SIGTERM)", 3),
            (PartyId(2), "P2 stopped (SIGTERM)".into())
        );
        assert_eq!(
            blame(PartyId(0), "P2 stopped (SIGTERM)", 3),
            (PartyId(2), "P2 stopped (SIGTERM) (as P0 reports)".into())
        );
        assert_eq!(
            blame(PartyId(0), "bad input", 3),
            (PartyId(0), "P0 gave up: bad input".into())
        );
        assert_eq!(blame(PartyId(0), "P20 x", 3).0, PartyId(0));
        let (mut mb, _) = mailbox(u64::MAX);
        let from_p0 = mb.expect(7, PartyId(0), "job/a#0".into());
        let from_p2 = mb.expect(7, PartyId(2), "job/b#0".into());
        let mut abort = env(2, "!abort", 0);
        abort.payload = b"P2 stopped (SIGTERM)".to_vec();
        mb.gave_up(abort);
        let later = mb.expect(7, PartyId(0), "job/c#0".into());
        for rx in [from_p0, from_p2, later] {
            match futures::executor::block_on(rx).unwrap() {
                Err(e @ ProtocolError::Aborted { by, .. }) => {
                    assert_eq!(by, PartyId(2));
                    assert_eq!(e.to_string(), "P2 stopped (SIGTERM)");
                }
                other => panic!("expected P2's abort, got {other:?}"),
            }
        }
    }

    /// A late envelope of a finished job (a peer still sending when this party's job failed)
    /// is dropped and released, and its sender is not cut off.
    #[test]
    fn late_envelopes_of_a_finished_job_are_dropped() {
        let (mut mb, backlog) = mailbox(10_000);
        let p0 = PartyId(0);
        mb.finish("old");
        let late = env(0, "old/a#0", 8);
        assert!(backlog.try_admit(p0, late.held_bytes()));
        mb.deliver(late);
        assert_eq!((mb.unclaimed(), backlog.queued(p0)), (0, 0));
        mb.deliver(env(0, "job/a#0", 8));
        let got = futures::executor::block_on(mb.expect(7, p0, "job/a#0".into()));
        assert!(got.unwrap().is_ok(), "P0 is still heard");
    }

    #[test]
    fn consumed_and_dropped_bytes_are_released() {
        let (mut mb, backlog) = mailbox(10_000);
        let p0 = PartyId(0);
        let kept = |len: u64| len + "job/a#0".len() as u64 + securenn_transports::KEPT_OVERHEAD;
        for (i, len) in [(0, 100), (1, 50)] {
            let e = env(0, &format!("job/a#{i}"), len);
            assert_eq!(e.held_bytes(), kept(len as u64));
            assert!(backlog.try_admit(p0, e.held_bytes()));
            mb.deliver(e);
        }
        assert_eq!(backlog.queued(p0), kept(100) + kept(50));
        let got = futures::executor::block_on(mb.expect(7, p0, "job/a#0".into()));
        assert_eq!(got.unwrap().unwrap().payload.len(), 100);
        assert_eq!(backlog.queued(p0), kept(50));
        assert_eq!(mb.finish("job"), 1, "one envelope nobody asked for");
        assert_eq!(backlog.queued(p0), 0);
    }
}
