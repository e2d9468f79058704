//! The one writer thread: group commit, seq assignment, the IM effects, failure isolation
//! per job (savepoints).

use super::*;
use crate::store::sql::{self, ImTx, Row, Sql, Value};

pub(super) struct Writer {
    conn: Connection,
    listener: Arc<dyn CommitListener>,
    caches: Caches,
    /// Set by the checkpoint thread when the WAL should start over (see [`WalCheckpointer`]).
    restart_wal: Arc<AtomicBool>,
    health: Arc<StoreHealth>,
}

impl Writer {
    /// The writer over its own connection; `restart_wal` is the checkpoint thread's request.
    pub(super) fn new(
        conn: Connection,
        listener: Arc<dyn CommitListener>,
        rules: &'static dyn SendRules,
        restart_wal: Arc<AtomicBool>,
        health: Arc<StoreHealth>,
    ) -> Self {
        let caches = Caches { rules, seqs: HashMap::new(), groups: HashMap::new(), direct: HashMap::new() };
        Self { conn, listener, caches, restart_wal, health }
    }
}

/// What the writer keeps in memory; apart from the connection so a transaction can borrow both.
pub(super) struct Caches {
    /// Who may send where (logic's rules).
    rules: &'static dyn SendRules,
    /// Last seq per conversation, loaded on first use. Only the writer assigns seqs, so the
    /// cache is the truth once loaded; it is dropped whenever a commit fails.
    seqs: HashMap<ConvId, u64>,
    /// Groups loaded by the writer. Every change to a group goes through the writer, so like
    /// `seqs` the cache is the truth once loaded (read positions excepted: never used here);
    /// dropped whenever a commit fails.
    groups: HashMap<GroupId, CachedGroup>,
    /// What a 1:1 message needs checked, per (recipient, sender): the recipient's message
    /// policy and its relation towards the sender. Relations change only through
    /// `Effect::PutRelation`, which updates its entry; a policy only through a `Write::Apply`
    /// (a profile update), which empties the map. Unknown users are not cached, so a user
    /// created later is seen. Dropped whenever a commit fails.
    direct: HashMap<(UserId, UserId), (DmPolicy, Relation)>,
}

pub(super) struct CachedGroup {
    state: GroupState,
    /// The member list as message recipients, rebuilt after a membership change.
    recipients: Option<Arc<[UserId]>>,
}

impl CachedGroup {
    fn recipients(&mut self) -> Arc<[UserId]> {
        self.recipients.get_or_insert_with(|| self.state.members.keys().copied().collect()).clone()
    }
}

/// A write's answer, held until its transaction commits. Every write taken off the queue gets
/// one, before any of its work runs: a write can fail, but it is never left unanswered.
pub(super) enum Reply {
    User(oneshot::Sender<Result<UserId, StoreError>>, Result<UserId, StoreError>),
    Append(oneshot::Sender<Result<Appended, StoreError>>, Result<Appended, StoreError>),
    Applied(oneshot::Sender<Result<usize, StoreError>>, Result<usize, StoreError>),
    Done(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::User(tx, r) => drop(tx.send(r)),
            Reply::Append(tx, r) => drop(tx.send(r)),
            Reply::Applied(tx, r) => drop(tx.send(r)),
            Reply::Done(tx, r) => drop(tx.send(r)),
        }
    }

    /// Why the storage could not take this write, if that is how it failed.
    fn unavailable(&self) -> Option<&str> {
        let err = match self {
            Reply::User(_, Err(e)) | Reply::Append(_, Err(e)) | Reply::Applied(_, Err(e)) | Reply::Done(_, Err(e)) => e,
            _ => return None,
        };
        match err {
            StoreError::Unavailable(why) => Some(why),
            _ => None,
        }
    }

    /// Answers with `err` instead (the transaction did not commit).
    fn fail(self, err: StoreError) -> Self {
        match self {
            Reply::User(tx, _) => Reply::User(tx, Err(err)),
            Reply::Append(tx, _) => Reply::Append(tx, Err(err)),
            Reply::Applied(tx, _) => Reply::Applied(tx, Err(err)),
            Reply::Done(tx, _) => Reply::Done(tx, Err(err)),
        }
    }
}

/// A write's work, apart from its answer.
pub(super) enum Job {
    CreateUser { username: String, password_hash: String },
    Append(NewMessage),
    Apply(WriteOp),
    Transact(Scope, Decide),
}

/// What a write's work left unanswered when it fails: no result was recorded yet.
pub(super) fn not_applied() -> StoreError {
    StoreError::Backend("the write was not applied".into())
}

/// The error a request sees when the engine failed on its own write. Disk full and I/O errors
/// say the storage is unavailable (a retry may succeed once an operator acts); anything else is
/// a failure of that one write.
pub(super) fn storage_error(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Write>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            if self.restart_wal.load(Ordering::Relaxed) {
                restart_wal(&self.conn, &self.restart_wal);
            }
        }
        tracing::debug!("store writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<Write>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        for write in batch.drain(..) {
            let (job, reply) = match write {
                Write::CreateUser { username, password_hash, reply } => {
                    (Job::CreateUser { username, password_hash }, Reply::User(reply, Err(not_applied())))
                }
                Write::Append { msg, reply } => (Job::Append(msg), Reply::Append(reply, Err(not_applied()))),
                Write::Apply { op, reply } => (Job::Apply(op), Reply::Applied(reply, Err(not_applied()))),
                Write::Transact { scope, decide, reply } => {
                    (Job::Transact(scope, decide), Reply::Done(reply, Err(not_applied())))
                }
            };
            jobs.push(job);
            replies.push(reply);
        }
        let mut committed = Vec::new();
        let started = std::time::Instant::now();
        match self.apply(jobs, &mut replies, &mut committed) {
            Ok(()) => {
                match replies.iter().find_map(Reply::unavailable) {
                    Some(why) => self.health.failed(why),
                    None => self.health.ok(),
                }
                let m = &*crate::telemetry::M;
                crate::telemetry::observe(&m.commit, started.elapsed());
                m.batch.record(committed.len() as f64);
                m.stored.increment(committed.len() as u64);
                if !committed.is_empty() {
                    self.listener.committed(&committed);
                }
                replies.into_iter().for_each(Reply::send);
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; batch refused");
                self.health.failed(&e.to_string());
                self.caches.clear();
                let err = storage_error(&e);
                replies.into_iter().for_each(|r| r.fail(err.clone()).send());
            }
        }
    }

    /// Runs a batch's jobs in one transaction. Consecutive appends run together inside one
    /// savepoint; any other job inside one of its own. A job that fails is rolled back to its
    /// savepoint and answers with its error alone (a failed run of appends is retried message by
    /// message), so one bad write never fails another's. Only a failure of the transaction
    /// itself (begin, the conversation upserts, commit) refuses the whole batch.
    fn apply(
        &mut self,
        jobs: Vec<Job>,
        replies: &mut [Reply],
        committed: &mut Vec<Committed>,
    ) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let caches = &mut self.caches;
        // Newest seq per conversation written in this batch, to update `conversations` once.
        let mut touched: Touched = HashMap::new();
        let mut run: Vec<(usize, NewMessage)> = Vec::new();
        let mut jobs = jobs.into_iter().enumerate().peekable();
        while let Some((i, job)) = jobs.next() {
            let job = match job {
                Job::Append(msg) => {
                    run.push((i, msg));
                    if matches!(jobs.peek(), Some((_, Job::Append(_)))) {
                        continue;
                    }
                    caches.append_run(&tx, &run, &mut touched, committed, replies)?;
                    run.clear();
                    continue;
                }
                other => other,
            };
            let outcome = caches.isolated(&tx, &mut touched, committed, |caches, tx, touched, committed| {
                Ok(match job {
                    Job::CreateUser { username, password_hash } => {
                        let now = now_ms() as i64;
                        let result = tx
                            .prepare_cached(
                                "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![username, password_hash, now]);
                        Outcome::User(match result {
                            Ok(_) => Ok(UserId(tx.last_insert_rowid() as u64)),
                            Err(e) if is_constraint(&e) => {
                                Err(StoreError::Conflict(format!("username {username:?} is taken")))
                            }
                            Err(e) => return Err(e),
                        })
                    }
                    Job::Apply(op) => {
                        // An arbitrary statement (profiles, passwords, keys): it may change a
                        // message policy.
                        caches.direct.clear();
                        Outcome::Applied(match op(tx) {
                            Ok(n) => Ok(n),
                            Err(e) if is_constraint(&e) => Err(StoreError::Conflict("already exists".into())),
                            Err(e) => return Err(e),
                        })
                    }
                    Job::Transact(scope, decide) => {
                        let mut im = LiteTx { tx, caches, touched, committed };
                        let snapshot = now(sql::snapshot(&mut im, &scope))?;
                        Outcome::Done(match decide(&snapshot) {
                            Ok(effects) => {
                                for effect in effects {
                                    now(sql::apply_effect(&mut im, effect))?;
                                }
                                Ok(())
                            }
                            Err(e) => Err(StoreError::Denied(e)),
                        })
                    }
                    Job::Append(_) => unreachable!("appends run above"),
                })
            })?;
            match (&mut replies[i], outcome) {
                (Reply::User(_, r), Ok(Outcome::User(o))) => *r = o,
                (Reply::Applied(_, r), Ok(Outcome::Applied(o))) => *r = o,
                (Reply::Done(_, r), Ok(Outcome::Done(o))) => *r = o,
                (reply, Err(e)) => {
                    tracing::error!(error = %e, "a store write failed and was rolled back; the rest of its batch commits");
                    let failed = std::mem::replace(reply, Reply::Done(oneshot::channel().0, Ok(())));
                    *reply = failed.fail(storage_error(&e));
                }
                _ => unreachable!("each job records the outcome of its own kind"),
            }
        }
        for (conv, (seq, ts, first)) in &touched {
            let (a, b) = match *conv {
                ConvId::Direct(a, b) => (a.0, b.0),
                _ => (0, 0),
            };
            tx.prepare_cached(
                "INSERT INTO conversations (conv_id, user_a, user_b, last_seq, last_ts) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(conv_id) DO UPDATE SET last_seq = excluded.last_seq, last_ts = excluded.last_ts",
            )?
            .execute(params![conv.to_string(), a as i64, b as i64, *seq as i64, *ts as i64])?;
            // A chat or stream that just started: its participants become members (groups
            // add theirs explicitly).
            if *first {
                for user in conv.participants() {
                    tx.prepare_cached("INSERT OR IGNORE INTO conv_members (conv_id, user_id) VALUES (?1, ?2)")?
                        .execute(params![conv.to_string(), user.0 as i64])?;
                }
            }
        }
        tx.commit()?;
        // Keep the caches bounded; they refill from the tables on demand.
        if self.caches.seqs.len() > 100_000 {
            self.caches.seqs.clear();
        }
        if self.caches.groups.len() > 10_000 {
            self.caches.groups.clear();
        }
        if self.caches.direct.len() > 100_000 {
            self.caches.direct.clear();
        }
        Ok(())
    }
}

/// What a job other than an append produced.
pub(super) enum Outcome {
    User(Result<UserId, StoreError>),
    Applied(Result<usize, StoreError>),
    Done(Result<(), StoreError>),
}

/// Newest seq and time per conversation written in a batch, and whether the batch started it.
pub(super) type Touched = HashMap<ConvId, (u64, u64, bool)>;

impl Caches {
    fn clear(&mut self) {
        self.seqs.clear();
        self.groups.clear();
        self.direct.clear();
    }

    /// Runs `work` inside a savepoint. If it fails, everything it wrote is rolled back — the
    /// rows, the seqs it took, the conversations it touched, the commits it reported — and its
    /// error is returned inside `Ok`; the outer `Err` is for a transaction that cannot go on.
    fn isolated<T>(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        touched: &mut Touched,
        committed: &mut Vec<Committed>,
        work: impl FnOnce(
            &mut Self,
            &rusqlite::Transaction<'_>,
            &mut Touched,
            &mut Vec<Committed>,
        ) -> Result<T, rusqlite::Error>,
    ) -> Result<Result<T, rusqlite::Error>, rusqlite::Error> {
        tx.prepare_cached("SAVEPOINT job")?.execute([])?;
        let (touched_before, committed_before) = (touched.clone(), committed.len());
        match work(self, tx, touched, committed) {
            Ok(v) => {
                tx.prepare_cached("RELEASE job")?.execute([])?;
                Ok(Ok(v))
            }
            Err(e) => {
                // Some errors (a full disk, I/O) make SQLite roll the whole transaction back by
                // itself: then nothing of the batch can commit, and the batch fails with them.
                if tx.is_autocommit() {
                    return Err(e);
                }
                tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
                tx.prepare_cached("RELEASE job")?.execute([])?;
                // The seqs the work took are free again: conversations touched earlier in the
                // batch go back to their seq then, the others reload from the table (updated
                // only at commit). Groups and 1:1 rules reload from the rolled-back rows.
                for conv in touched.keys() {
                    match touched_before.get(conv) {
                        Some(&(seq, _, _)) => self.seqs.insert(*conv, seq),
                        None => self.seqs.remove(conv),
                    };
                }
                *touched = touched_before;
                committed.truncate(committed_before);
                self.groups.clear();
                self.direct.clear();
                Ok(Err(e))
            }
        }
    }

    /// Appends a run of consecutive messages in one savepoint, recording each one's result in
    /// its reply. If the run fails, it is rolled back and retried one message at a time, so
    /// only the message that fails is refused.
    fn append_run(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        run: &[(usize, NewMessage)],
        touched: &mut Touched,
        committed: &mut Vec<Committed>,
        replies: &mut [Reply],
    ) -> Result<(), rusqlite::Error> {
        let together = self.isolated(tx, touched, committed, |caches, tx, touched, committed| {
            run.iter().map(|(_, msg)| caches.append_checked(tx, msg, touched, committed)).collect::<Result<Vec<_>, _>>()
        })?;
        let results = match together {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(error = %e, messages = run.len(), "appends failed together; retrying one by one");
                let mut results = Vec::with_capacity(run.len());
                for (_, msg) in run {
                    let alone = self.isolated(tx, touched, committed, |caches, tx, touched, committed| {
                        caches.append_checked(tx, msg, touched, committed)
                    })?;
                    results.push(alone.unwrap_or_else(|e| {
                        tracing::error!(error = %e, conv = %msg.conv_id, "a message could not be stored; the rest of its batch commits");
                        Err(storage_error(&e))
                    }));
                }
                results
            }
        };
        for ((i, _), result) in run.iter().zip(results) {
            if let Reply::Append(_, r) = &mut replies[*i] {
                *r = result;
            }
        }
        Ok(())
    }

    /// Checks a client's message against the committed rules, then appends it.
    fn append_checked(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        msg: &NewMessage,
        touched: &mut Touched,
        committed: &mut Vec<Committed>,
    ) -> Result<Result<Appended, StoreError>, rusqlite::Error> {
        match self.may_append(tx, msg)? {
            Ok(()) => self.append(tx, msg, touched, committed),
            Err(e) => Ok(Err(StoreError::Denied(e))),
        }
    }

    /// Whether a client's message may be appended: the 1:1 recipient's blocks and policy, the
    /// group's membership and mutes — checked here, in the writer, so they are consistent with
    /// every block, kick and mute committed before.
    fn may_append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        msg: &NewMessage,
    ) -> Result<Result<(), crate::error::Error>, rusqlite::Error> {
        match msg.conv_id {
            ConvId::Direct(..) => {
                let Some(to) = msg.conv_id.peer_of(msg.from).filter(|to| *to != msg.from) else {
                    return Ok(Ok(()));
                };
                if let Some((policy, relation)) = self.direct.get(&(to, msg.from)) {
                    return Ok(self.rules.direct(*policy, relation));
                }
                // Two primary-key probes on a miss. (One LEFT JOIN with the peer bound in its ON
                // clause was re-prepared by SQLite on every execution: measured at a quarter of
                // the writer's time.)
                let policy: Option<String> = tx
                    .prepare_cached("SELECT dm_policy FROM users WHERE id = ?1")?
                    .query_row([to.0 as i64], |r| r.get(0))
                    .optional()?;
                let Some(policy) = policy else {
                    return Ok(Err(crate::error::Error::not_found(format!("user {to} does not exist"))));
                };
                let rule = (DmPolicy::parse(&policy), now(sql::load_relation(&mut Lite(tx), to, msg.from))?);
                let verdict = self.rules.direct(rule.0, &rule.1);
                self.direct.insert((to, msg.from), rule);
                Ok(verdict)
            }
            ConvId::Group(g) => {
                let now = crate::clock::now_ms();
                let rules = self.rules;
                Ok(match self.group(tx, g)? {
                    Some(group) => rules.group(&group.state, msg.from, now),
                    None => Err(crate::error::Error::not_found("conversation not found")),
                })
            }
            ConvId::User(_) => Ok(Ok(())),
        }
    }

    /// The group, from the cache or loaded into it.
    fn group(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        g: GroupId,
    ) -> Result<Option<&mut CachedGroup>, rusqlite::Error> {
        match self.groups.entry(g) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(Some(e.into_mut())),
            std::collections::hash_map::Entry::Vacant(v) => match now(sql::load_group(&mut Lite(tx), g, 0))? {
                Some(state) => Ok(Some(v.insert(CachedGroup { state, recipients: None }))),
                None => Ok(None),
            },
        }
    }

    fn last_seq(&self, tx: &rusqlite::Transaction<'_>, conv: ConvId) -> Result<u64, rusqlite::Error> {
        match self.seqs.get(&conv) {
            Some(s) => Ok(*s),
            None => now(sql::stored_last_seq(&mut Lite(tx), conv)),
        }
    }

    /// Appends one message (dedup by client id), returning the stored or the original message.
    fn append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        msg: &NewMessage,
        touched: &mut Touched,
        committed: &mut Vec<Committed>,
    ) -> Result<Result<Appended, StoreError>, rusqlite::Error> {
        let seq = self.last_seq(tx, msg.conv_id)? + 1;
        // The unique index on (sender, client_msg_id) is the dedup: one index probe for the
        // common case of a new message, a lookup only for a resend (also one queued earlier in
        // this same batch, as the transaction sees its rows).
        let inserted = tx
            .prepare_cached(
                "INSERT INTO messages (conv_id, seq, msg_id, sender, sender_device, client_msg_id, ts, body, counted) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(client_msg_id, sender) DO NOTHING",
            )?
            .execute(params![
                msg.conv_id.to_string(),
                seq as i64,
                msg.msg_id.0 as i64,
                msg.from.0 as i64,
                msg.from_device.0,
                msg.client_msg_id,
                msg.ts as i64,
                &msg.body_json[..],
                msg.body.is_content(),
            ])?;
        if inserted == 0 {
            return Ok(match find_by_client_id(tx, msg.from, &msg.client_msg_id)? {
                Some(original) if original.conv_id == msg.conv_id => {
                    Ok(Appended { message: original, duplicate: true })
                }
                _ => Err(StoreError::Conflict(format!(
                    "client_msg_id {:?} was already used for another conversation",
                    msg.client_msg_id
                ))),
            });
        }
        self.seqs.insert(msg.conv_id, seq);
        let entry = touched.entry(msg.conv_id).or_insert((seq, msg.ts, seq == 1));
        entry.0 = seq;
        entry.1 = msg.ts;
        let recipients: Arc<[UserId]> = match msg.conv_id {
            ConvId::Group(g) => match self.group(tx, g)? {
                Some(group) => group.recipients(),
                None => Arc::from(Vec::new()),
            },
            conv => conv.participants().collect(),
        };
        let message = Message {
            msg_id: msg.msg_id,
            conv_id: msg.conv_id,
            seq,
            from: msg.from,
            client_msg_id: msg.client_msg_id.clone(),
            ts: msg.ts,
            body: msg.body.clone(),
        };
        committed.push(Committed { message: message.clone(), from_device: msg.from_device.clone(), recipients });
        Ok(Ok(Appended { message, duplicate: false }))
    }

    /// Keeps the caches true after `effect` was written.
    fn wrote(&mut self, effect: &Effect) {
        match effect {
            Effect::PutGroup(info) => {
                if let Some(cached) = self.groups.get_mut(&info.id) {
                    cached.state.info = info.clone();
                }
            }
            Effect::PutMember(g, member) => {
                if let Some(cached) = self.groups.get_mut(g) {
                    cached.state.members.insert(member.user, member.clone());
                    cached.recipients = None;
                }
            }
            Effect::RemoveMember(g, user) => {
                if let Some(cached) = self.groups.get_mut(g) {
                    cached.state.members.remove(user);
                    cached.recipients = None;
                }
            }
            Effect::PutJoinRequest(g, req) => {
                if let Some(cached) = self.groups.get_mut(g) {
                    cached.state.requests.insert(req.user, req.clone());
                }
            }
            Effect::RemoveJoinRequest(g, user) => {
                if let Some(cached) = self.groups.get_mut(g) {
                    cached.state.requests.remove(user);
                }
            }
            Effect::PutRelation { owner, peer, relation } => {
                if let Some((_, cached)) = self.direct.get_mut(&(*owner, *peer)) {
                    *cached = relation.clone();
                }
            }
            Effect::SetRead { .. } | Effect::Replace { .. } | Effect::Append(_) => {}
        }
    }
}

/// An IM transaction inside the writer's batch: the shared model (`store::sql`) over the
/// writer's transaction and caches.
pub(super) struct LiteTx<'a, 'c> {
    tx: &'a rusqlite::Transaction<'c>,
    caches: &'a mut Caches,
    touched: &'a mut Touched,
    committed: &'a mut Vec<Committed>,
}

impl Sql for LiteTx<'_, '_> {
    type Error = rusqlite::Error;

    async fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, rusqlite::Error> {
        Lite(self.tx).execute(sql, params).await
    }

    async fn query<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_, rusqlite::Error>) -> Result<T, rusqlite::Error>,
    ) -> Result<Vec<T>, rusqlite::Error> {
        Lite(self.tx).query(sql, params, map).await
    }
}

impl ImTx for LiteTx<'_, '_> {
    async fn last_seq(&mut self, conv: ConvId) -> Result<u64, rusqlite::Error> {
        self.caches.last_seq(self.tx, conv)
    }

    async fn group(&mut self, g: GroupId) -> Result<Option<GroupState>, rusqlite::Error> {
        Ok(self.caches.group(self.tx, g)?.map(|cached| cached.state.clone()))
    }

    async fn append(&mut self, msg: NewMessage) -> Result<(), rusqlite::Error> {
        // The rules already checked the operation; a conflict here (a reused client id) would
        // be a bug, so it fails the operation.
        match self.caches.append(self.tx, &msg, self.touched, self.committed)? {
            Ok(_) => Ok(()),
            Err(e) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
        }
    }

    fn wrote(&mut self, effect: &Effect) {
        self.caches.wrote(effect);
    }
}
