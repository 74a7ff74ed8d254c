//! Numbered publishes grouped per room: at each flush the command thread turns the publishes
//! of a room that are pending into one call of the publish script (up to
//! [`MAX_PER_CALL`] messages), whose answer is split back into one answer per publish, in
//! order. Redis then runs one script, one numbering and one `PUBLISH` for the group: the
//! fixed cost of a script call (and of fanning a message out to the subscribed nodes) is paid
//! once per group, not once per message.
//!
//! While [`MAX_FLUSHES_IN_FLIGHT`] flushes with publishes wait for their answers, new
//! publishes are held (their deadlines run): what comes meanwhile goes out as the next
//! groups. A publish on an idle connection goes out at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use redis::Value;

use super::command::{Call, Fail, Job, OnReply};
use super::scripts::Script;
use super::{Cluster, ID_WINDOW, wire};
use crate::hub::store::Epoch;

/// Messages in one script call at most.
pub(crate) const MAX_PER_CALL: usize = 128;

/// Flushes with publishes that may wait for their answers at once.
pub(crate) const MAX_FLUSHES_IN_FLIGHT: usize = 2;

/// One numbered publish, as queued for the command thread.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) room: Arc<str>,
    /// Its publish id's key, when it has an id.
    pub(crate) id_key: Option<String>,
    /// Its fingerprint (empty without an id).
    pub(crate) fingerprint: Vec<u8>,
    /// The encoded publication.
    pub(crate) payload: Vec<u8>,
}

/// Counts something while it lives (a flush in flight, a publish waiting).
pub(crate) struct Counted {
    count: Arc<AtomicUsize>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Counted {
    pub(crate) fn new(count: &Arc<AtomicUsize>, on_drop: Option<Box<dyn FnOnce() + Send>>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self { count: Arc::clone(count), on_drop }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// The publish script call of `group` (publishes of one room, in order).
pub(crate) fn call(cluster: &Cluster, group: &[&Publish]) -> Call {
    let room = &group[0].room;
    let keys = &cluster.keys;
    let settings = &cluster.settings;
    let meta = keys.meta(room);
    let mut script_keys = Vec::with_capacity(group.len() + 2);
    script_keys.push(meta.clone());
    script_keys.push(keys.stream(room));
    let mut args = Vec::with_capacity(5 + 2 * group.len());
    args.push(keys.channel(room).into_bytes());
    args.push(Epoch::random().as_str().as_bytes().to_vec());
    args.push(settings.history_size.to_string().into_bytes());
    args.push(settings.history_ttl_ms.to_string().into_bytes());
    args.push((ID_WINDOW.as_millis() as u64).to_string().into_bytes());
    for publish in group {
        script_keys.push(publish.id_key.clone().unwrap_or_else(|| meta.clone()));
        args.push(publish.fingerprint.clone());
        args.push(publish.payload.clone());
    }
    Call::Script { script: Script::Publish, keys: script_keys, args }
}

/// Splits a group's answer into one per publish.
fn answer(reply: Result<Value, Fail>, dones: Vec<OnReply>) {
    match reply {
        Ok(Value::Array(items)) if items.len() == dones.len() => {
            for (done, item) in dones.into_iter().zip(items) {
                done(Ok(item));
            }
        }
        Ok(other) => {
            let why = wire::unexpected(&other);
            for done in dones {
                done(Err(Fail::Server(why.clone())));
            }
        }
        Err(fail) => {
            for done in dones {
                done(Err(fail.clone()));
            }
        }
    }
}

/// The jobs to write for `jobs`, in order, each publish within its room's group (at the
/// place of the group's first publish); `hold` keeps publishes back (they are returned).
pub(crate) fn group(cluster: &Cluster, jobs: Vec<Job>, hold: bool) -> (Vec<Job>, Vec<Job>) {
    enum Slot {
        One(Job),
        Group(Vec<Job>),
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(jobs.len());
    let mut held = Vec::new();
    let mut open: HashMap<Arc<str>, usize> = HashMap::new();
    for job in jobs {
        let Some(publish) = job.publish() else {
            slots.push(Slot::One(job));
            continue;
        };
        if hold {
            held.push(job);
            continue;
        }
        let at = open.get(&publish.room).copied();
        match at {
            Some(at) if matches!(&slots[at], Slot::Group(g) if g.len() < MAX_PER_CALL) => {
                if let Slot::Group(g) = &mut slots[at] {
                    g.push(job);
                }
            }
            _ => {
                open.insert(Arc::clone(&publish.room), slots.len());
                slots.push(Slot::Group(vec![job]));
            }
        }
    }
    let out = slots
        .into_iter()
        .map(|slot| match slot {
            Slot::One(job) => job,
            Slot::Group(jobs) => merge(cluster, jobs),
        })
        .collect();
    (out, held)
}

/// One job for a group of publishes of one room.
fn merge(cluster: &Cluster, jobs: Vec<Job>) -> Job {
    let deadline = jobs.iter().map(Job::deadline).min().unwrap_or_else(Instant::now);
    let call = {
        let group: Vec<&Publish> = jobs.iter().filter_map(Job::publish).collect();
        call(cluster, &group)
    };
    let dones: Vec<OnReply> = jobs.into_iter().map(Job::into_done).collect();
    Job::until(call, deadline, Box::new(move |reply| answer(reply, dones)))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::hub::HubConfig;

    fn cluster() -> Cluster {
        let config = super::super::ClusterConfig::new(["redis://127.0.0.1:1/"]).unwrap().prefix("t:");
        Cluster::new(&config, &HubConfig::default())
    }

    type Answers = Arc<Mutex<Vec<(usize, Result<Value, Fail>)>>>;

    fn publish(room: &str, n: usize, answers: &Answers) -> Job {
        let answers = Arc::clone(answers);
        let publish = Publish {
            room: room.into(),
            id_key: (n % 2 == 0).then(|| format!("id{n}")),
            fingerprint: if n % 2 == 0 { b"fp".to_vec() } else { Vec::new() },
            payload: format!("p{n}").into_bytes(),
        };
        Job::new(
            Call::Publish(Box::new(publish)),
            Duration::from_secs(1),
            Box::new(move |r| answers.lock().unwrap().push((n, r))),
        )
    }

    fn script(job: &Job) -> (&[String], &[Vec<u8>]) {
        match job.call() {
            Call::Script { script: Script::Publish, keys, args } => (keys, args),
            _ => panic!("not a publish script call"),
        }
    }

    #[test]
    fn the_publishes_of_a_room_go_as_one_call_in_order_and_each_gets_its_answer() {
        let cluster = cluster();
        let answers = Answers::default();
        let jobs = vec![
            publish("a", 0, &answers),
            publish("b", 1, &answers),
            Job::new(Call::Cmd(redis::cmd("PING")), Duration::from_secs(1), Box::new(|_| {})),
            publish("a", 2, &answers),
            publish("a", 3, &answers),
        ];
        let (out, held) = group(&cluster, jobs, false);
        assert!(held.is_empty());
        assert_eq!(out.len(), 3, "a's group, b's, the PING");
        let (keys, args) = script(&out[0]);
        assert_eq!(keys, ["t:{a}.m", "t:{a}.x", "id0", "id2", "t:{a}.m"], "the last has no id");
        assert_eq!(args.len(), 5 + 2 * 3);
        let payloads: Vec<&[u8]> = args[5..].chunks(2).map(|c| &c[1][..]).collect();
        assert_eq!(payloads, [&b"p0"[..], b"p2", b"p3"], "in the order sent");
        assert_eq!((&args[5][..], &args[7][..]), (&b"fp"[..], &b"fp"[..]));
        assert!(args[9].is_empty(), "no fingerprint without an id");
        assert_eq!(script(&out[1]).0.len(), 3);
        assert!(matches!(out[2].call(), Call::Cmd(_)));
        let mut out = out.into_iter();
        let answer =
            |seq: i64| Value::Array(vec![Value::Int(2), Value::Int(seq), Value::BulkString(b"e".to_vec())]);
        out.next().unwrap().finish(Ok(Value::Array(vec![answer(1), answer(2), answer(3)])));
        out.next().unwrap().finish(Err(Fail::Timeout));
        let got = answers.lock().unwrap();
        let seqs: Vec<(usize, Option<i64>)> = got
            .iter()
            .map(|(n, r)| {
                (*n, r.as_ref().ok().and_then(|v| wire::array(v, 3).ok()).and_then(|a| wire::int(&a[1]).ok()))
            })
            .collect();
        assert_eq!(seqs, [(0, Some(1)), (2, Some(2)), (3, Some(3)), (1, None)]);
        assert_eq!(got[3].1, Err(Fail::Timeout));
    }

    #[test]
    fn an_answer_of_the_wrong_shape_fails_every_publish_of_the_group() {
        let cluster = cluster();
        let answers = Answers::default();
        let jobs = (0..3).map(|n| publish("a", n, &answers)).collect();
        let (out, _) = group(&cluster, jobs, false);
        assert_eq!(out.len(), 1);
        out.into_iter().next().unwrap().finish(Ok(Value::Array(vec![Value::Int(1)])));
        let got = answers.lock().unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(_, r)| matches!(r, Err(Fail::Server(_)))), "{got:?}");
    }

    #[test]
    fn groups_are_capped_and_held_publishes_come_back() {
        let cluster = cluster();
        let answers = Answers::default();
        let jobs = (0..MAX_PER_CALL + 1).map(|n| publish("a", n, &answers)).collect();
        let (out, _) = group(&cluster, jobs, false);
        assert_eq!(out.iter().map(|j| script(j).0.len() - 2).collect::<Vec<_>>(), [MAX_PER_CALL, 1]);
        let jobs = vec![
            publish("a", 0, &answers),
            Job::new(Call::Cmd(redis::cmd("PING")), Duration::from_secs(1), Box::new(|_| {})),
        ];
        let (out, held) = group(&cluster, jobs, true);
        assert_eq!((out.len(), held.len()), (1, 1), "the PING goes, the publish waits");
        assert!(held[0].publish().is_some());
    }

    #[test]
    fn a_counted_thing_counts_while_it_lives() {
        let count = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let a = Counted::new(
            &count,
            Some(Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let b = Counted::new(&count, None);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        drop(a);
        drop(b);
        assert_eq!((count.load(Ordering::SeqCst), woken.load(Ordering::SeqCst)), (0, 1));
    }
}
