//! Pub/sub in RESP2: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH`, and
//! the subscribed mode's rules, with Redis 7.0's replies (checked against `redis-server`
//! 7.0.15). Sentinel announces itself through `__sentinel__:hello` with these.
//!
//! Every connection lives in the one event loop, so a publisher and its subscribers run on the
//! same thread: a message goes into the subscriber's [`Subscriber`] outbox and the connection's
//! token onto the mail list; the loop moves the outbox behind the connection's replies at the
//! end of the turn, and before the connection's own next reply, so a message never lands
//! inside a reply or out of order with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use durable_resp as resp;

use crate::commands::glob_match;
use crate::server::lock;

/// Commands handled here (any case).
const COMMANDS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "publish",
];

/// Whether `name` (any case) is a pub/sub command.
pub(crate) fn is_pubsub_command(name: &[u8]) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// Where messages for one connection wait for the event loop.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// The connection's event-loop token.
    token: usize,
    outbox: Mutex<Vec<u8>>,
}

impl Subscriber {
    fn deliver(&self, pubsub: &PubSub, bytes: &[u8]) {
        let mut outbox = lock(&self.outbox);
        if outbox.is_empty() {
            lock(&pubsub.mail).push(self.token);
        }
        outbox.extend_from_slice(bytes);
    }

    /// Takes the messages waiting for the connection.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.outbox))
    }
}

/// Every channel and pattern subscription.
#[derive(Debug, Default)]
pub(crate) struct PubSub {
    channels: Mutex<BTreeMap<Vec<u8>, Vec<Arc<Subscriber>>>>,
    patterns: Mutex<BTreeMap<Vec<u8>, Vec<Arc<Subscriber>>>>,
    /// Tokens of the connections whose outbox went from empty to not empty.
    mail: Mutex<Vec<usize>>,
}

/// One connection's subscriptions, in the order they were made.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    me: Arc<Subscriber>,
    channels: Vec<Vec<u8>>,
    patterns: Vec<Vec<u8>>,
}

fn arity(name: &str) -> Vec<u8> {
    resp::error(format!("ERR wrong number of arguments for '{name}' command").as_bytes())
}

fn count(n: usize) -> Vec<u8> {
    resp::integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn event(kind: &[u8], name: Option<&[u8]>, n: usize) -> Vec<u8> {
    resp::array(&[
        resp::bulk(kind),
        name.map_or_else(resp::null_bulk, resp::bulk),
        count(n),
    ])
}

impl Subscriptions {
    /// No subscriptions yet, for the connection with event-loop token `token`.
    pub(crate) fn new(token: usize) -> Subscriptions {
        Subscriptions {
            me: Arc::new(Subscriber {
                token,
                outbox: Mutex::new(Vec::new()),
            }),
            channels: Vec::new(),
            patterns: Vec::new(),
        }
    }

    /// The connection's outbox.
    pub(crate) fn subscriber(&self) -> &Subscriber {
        &self.me
    }

    /// Whether the connection is in subscribed mode.
    pub(crate) fn active(&self) -> bool {
        self.total() > 0
    }

    /// The number of channels and of patterns subscribed to.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.channels.len(), self.patterns.len())
    }

    fn total(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Handles a pub/sub command, `PING` in subscribed mode, and refuses what subscribed
    /// mode does not allow. `None`: not for this module, run it as usual.
    pub(crate) fn step(&mut self, pubsub: &PubSub, argv: &[Vec<u8>]) -> Option<Vec<u8>> {
        let name = argv.first()?;
        if self.total() == 0 && !is_pubsub_command(name) {
            // The common case, decided without an allocation.
            return None;
        }
        let name = name.to_ascii_lowercase();
        let rest = argv.get(1..).unwrap_or_default();
        let subscribed = self.total() > 0;
        match name.as_slice() {
            b"subscribe" | b"psubscribe" if rest.is_empty() => {
                Some(arity(&String::from_utf8_lossy(&name)))
            }
            b"subscribe" | b"psubscribe" => {
                let pattern = name == b"psubscribe";
                let mut out = Vec::new();
                for target in rest {
                    let (mine, table) = if pattern {
                        (&mut self.patterns, &pubsub.patterns)
                    } else {
                        (&mut self.channels, &pubsub.channels)
                    };
                    if !mine.contains(target) {
                        mine.push(target.clone());
                        lock(table)
                            .entry(target.clone())
                            .or_default()
                            .push(Arc::clone(&self.me));
                    }
                    out.extend(event(&name, Some(target), self.total()));
                }
                Some(out)
            }
            b"unsubscribe" | b"punsubscribe" => {
                let pattern = name == b"punsubscribe";
                let targets: Vec<Vec<u8>> = if rest.is_empty() {
                    if pattern {
                        self.patterns.clone()
                    } else {
                        self.channels.clone()
                    }
                } else {
                    rest.to_vec()
                };
                if targets.is_empty() {
                    return Some(event(&name, None, self.total()));
                }
                let mut out = Vec::new();
                for target in &targets {
                    let (mine, table) = if pattern {
                        (&mut self.patterns, &pubsub.patterns)
                    } else {
                        (&mut self.channels, &pubsub.channels)
                    };
                    if let Some(i) = mine.iter().position(|c| c == target) {
                        mine.remove(i);
                        let mut t = lock(table);
                        if let Some(subs) = t.get_mut(target) {
                            subs.retain(|s| !Arc::ptr_eq(s, &self.me));
                            if subs.is_empty() {
                                t.remove(target);
                            }
                        }
                    }
                    out.extend(event(&name, Some(target), self.total()));
                }
                Some(out)
            }
            b"ping" if subscribed => match rest {
                [] => Some(resp::array(&[resp::bulk(b"pong"), resp::bulk(b"")])),
                [msg] => Some(resp::array(&[resp::bulk(b"pong"), resp::bulk(msg)])),
                _ => Some(arity("ping")),
            },
            b"quit" | b"reset" => None,
            _ if subscribed => Some(resp::error(
                format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                     QUIT / RESET are allowed in this context",
                    String::from_utf8_lossy(&name)
                )
                .as_bytes(),
            )),
            b"publish" => match rest {
                [channel, message] => Some(count(pubsub.publish(channel, message))),
                _ => Some(arity("publish")),
            },
            _ => None,
        }
    }

    /// Drops every subscription (the connection is closing).
    pub(crate) fn clear(&mut self, pubsub: &PubSub) {
        for (mine, table) in [
            (&mut self.channels, &pubsub.channels),
            (&mut self.patterns, &pubsub.patterns),
        ] {
            let mut t = lock(table);
            for target in mine.drain(..) {
                if let Some(subs) = t.get_mut(&target) {
                    subs.retain(|s| !Arc::ptr_eq(s, &self.me));
                    if subs.is_empty() {
                        t.remove(&target);
                    }
                }
            }
        }
    }
}

impl PubSub {
    /// Takes the tokens of the connections with messages waiting.
    pub(crate) fn take_mail(&self) -> Vec<usize> {
        std::mem::take(&mut *lock(&self.mail))
    }

    /// Sends `message` to every subscriber of `channel` and of a matching pattern; the number
    /// of deliveries, as Redis counts them.
    pub(crate) fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let direct: Vec<Arc<Subscriber>> = lock(&self.channels)
            .get(channel)
            .cloned()
            .unwrap_or_default();
        let by_pattern: Vec<(Vec<u8>, Arc<Subscriber>)> = lock(&self.patterns)
            .iter()
            .filter(|(p, _)| glob_match(p, channel))
            .flat_map(|(p, subs)| subs.iter().map(|s| (p.clone(), Arc::clone(s))))
            .collect();
        let msg = resp::array(&[
            resp::bulk(b"message"),
            resp::bulk(channel),
            resp::bulk(message),
        ]);
        let mut n = 0;
        for s in &direct {
            s.deliver(self, &msg);
            n += 1;
        }
        for (p, s) in &by_pattern {
            s.deliver(
                self,
                &resp::array(&[
                    resp::bulk(b"pmessage"),
                    resp::bulk(p),
                    resp::bulk(channel),
                    resp::bulk(message),
                ]),
            );
            n += 1;
        }
        n
    }
}
