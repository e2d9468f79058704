//! The writer task: batches of appends under conversation locks, seqs, the 1:1 rules' inputs.

use super::*;
use crate::store::sql::{self, message_from, relation_from};

/// How often a batch of appends is retried after a deadlock or a race before it is refused.
pub(super) const BATCH_ATTEMPTS: u32 = 5;

pub(super) struct Writer {
    pool: Pool,
    listener: Arc<dyn CommitListener>,
    /// Who may send where (logic's rules).
    rules: &'static dyn SendRules,
    health: Arc<StoreHealth>,
}

impl Writer {
    pub(super) fn new(
        pool: Pool,
        listener: Arc<dyn CommitListener>,
        rules: &'static dyn SendRules,
        health: Arc<StoreHealth>,
    ) -> Self {
        Self { pool, listener, rules, health }
    }
}

/// An append waiting in a batch.
pub(super) struct Pending {
    msg: NewMessage,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

impl Writer {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Write>, max_batch: usize) {
        let mut batch: Vec<Write> = Vec::with_capacity(max_batch);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            // Consecutive appends go in one transaction; an IM operation runs on its own, in
            // queue order.
            let mut appends = Vec::new();
            for write in batch.drain(..) {
                match write {
                    Write::Append { msg, reply } => appends.push(Pending { msg, reply }),
                    Write::Transact { scope, decide, reply } => {
                        self.append_batch(std::mem::take(&mut appends)).await;
                        let result = self.transact(scope, decide).await;
                        self.note_health(result.as_ref().err().into_iter());
                        let _ = reply.send(result);
                    }
                }
            }
            self.append_batch(appends).await;
        }
        tracing::debug!("postgres store writer stopped");
    }

    /// Commits a batch of appends. If it fails for a reason other than a retryable race, it is
    /// retried message by message, so one message the database refuses fails only its own send.
    async fn append_batch(&self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let msgs: Vec<NewMessage> = batch.iter().map(|p| p.msg.clone()).collect();
        match self.commit_appends(&msgs).await {
            Ok(results) => self.answer(batch, results),
            Err(e) if batch.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, messages = batch.len(), "append batch failed; retrying one by one");
                for (pending, msg) in batch.into_iter().zip(msgs) {
                    let result = match self.commit_appends(std::slice::from_ref(&msg)).await {
                        Ok(mut results) => {
                            results.pop().unwrap_or_else(|| Err(StoreError::Backend("no result".into())))
                        }
                        Err(e) => Err(e),
                    };
                    self.answer(vec![pending], vec![result]);
                }
            }
            Err(e) => {
                let results = batch.iter().map(|_| Err(e.clone())).collect();
                self.answer(batch, results);
            }
        }
    }

    /// Sends each pending append its result and records the store's health.
    fn answer(&self, batch: Vec<Pending>, results: Vec<Result<Appended, StoreError>>) {
        self.note_health(results.iter().filter_map(|r| r.as_ref().err()));
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.reply.send(r);
        }
    }

    fn note_health<'a>(&self, errors: impl Iterator<Item = &'a StoreError>) {
        let mut unavailable = None;
        for e in errors {
            if let StoreError::Unavailable(why) = e {
                unavailable = Some(why.as_str());
            }
        }
        match unavailable {
            Some(why) => self.health.failed(why),
            None => self.health.ok(),
        }
    }

    /// Commits appends in one transaction, retrying races; reports the commits to the listener.
    async fn commit_appends(&self, msgs: &[NewMessage]) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let (results, committed) = loop {
            attempt += 1;
            match self.try_append_batch(msgs).await {
                Err(BatchError::Retry(why)) if attempt < BATCH_ATTEMPTS => {
                    tracing::debug!(%why, attempt, "append batch retried");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(BatchError::Retry(why)) => return Err(StoreError::Backend(why)),
                Err(BatchError::Failed(e)) => {
                    tracing::error!(error = %e, messages = msgs.len(), "append batch failed");
                    return Err(e);
                }
                Ok(done) => break done,
            }
        };
        let m = &*crate::telemetry::M;
        crate::telemetry::observe(&m.commit, started.elapsed());
        m.batch.record(committed.len() as f64);
        m.stored.increment(committed.len() as u64);
        if !committed.is_empty() {
            self.listener.committed(&committed);
        }
        Ok(results)
    }

    /// One attempt at a batch: a fixed number of round trips whatever its size.
    async fn try_append_batch(&self, msgs: &[NewMessage]) -> Result<BatchDone, BatchError> {
        let mut client = self.pool.get().await.map_err(|e| BatchError::Failed(pool_error(e)))?;
        let tx = client.transaction().await?;
        let mut held = BTreeSet::new();
        lock_convs(&tx, &mut held, msgs.iter().map(|m| m.conv_id.to_string())).await?;
        let mut seqs = Seqs::load(&tx, msgs.iter().map(|m| m.conv_id)).await?;

        // Who may send: 1:1 recipients' policies and blocks in one query, groups one each.
        let pairs: Vec<(UserId, UserId)> = msgs
            .iter()
            .filter_map(|m| match m.conv_id {
                ConvId::Direct(..) => m.conv_id.peer_of(m.from).filter(|to| *to != m.from).map(|to| (to, m.from)),
                _ => None,
            })
            .collect();
        let dm = load_dm_rules(&tx, &pairs).await?;
        let mut groups: HashMap<GroupId, Option<GroupState>> = HashMap::new();
        for g in msgs.iter().filter_map(|m| m.conv_id.group()) {
            if let std::collections::hash_map::Entry::Vacant(v) = groups.entry(g) {
                v.insert(sql::load_group(&mut Pg(&tx), g, 0).await.map_err(BatchError::Failed)?);
            }
        }

        // Resends: originals stored earlier (by any node).
        let senders: Vec<i64> = msgs.iter().map(|m| m.from.0 as i64).collect();
        let keys: Vec<&str> = msgs.iter().map(|m| m.client_msg_id.as_str()).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE (sender, client_msg_id) IN \
                     (SELECT * FROM unnest($1::bigint[], $2::text[]))"
                ),
                &[&senders, &keys],
            )
            .await?;
        let mut originals: HashMap<(UserId, String), Message> = HashMap::new();
        for row in rows {
            let m = message_from(&row, 0).map_err(BatchError::Failed)?;
            originals.insert((m.from, m.client_msg_id.clone()), m);
        }

        let now = crate::clock::now_ms();
        let mut results: Vec<Result<Appended, StoreError>> = Vec::with_capacity(msgs.len());
        let mut committed = Vec::new();
        let mut fresh = NewRows::default();
        // Earlier messages of this batch, by (sender, key): a resend within one batch.
        let mut in_batch: HashMap<(UserId, &str), usize> = HashMap::new();
        for (i, msg) in msgs.iter().enumerate() {
            let allowed = match msg.conv_id {
                ConvId::Direct(..) => match msg.conv_id.peer_of(msg.from).filter(|to| *to != msg.from) {
                    None => Ok(()),
                    Some(to) => match dm.get(&(to, msg.from)) {
                        None => Err(crate::error::Error::not_found(format!("user {to} does not exist"))),
                        Some((policy, relation)) => self.rules.direct(*policy, relation),
                    },
                },
                ConvId::Group(g) => match groups.get(&g).and_then(Option::as_ref) {
                    Some(group) => self.rules.group(group, msg.from, now),
                    None => Err(crate::error::Error::not_found("conversation not found")),
                },
                ConvId::User(_) => Ok(()),
            };
            if let Err(e) = allowed {
                results.push(Err(StoreError::Denied(e)));
                continue;
            }
            let original = originals.get(&(msg.from, msg.client_msg_id.clone())).cloned().or_else(|| {
                in_batch.get(&(msg.from, msg.client_msg_id.as_str())).and_then(|&j| match &results[j] {
                    Ok(a) => Some(a.message.clone()),
                    Err(_) => None,
                })
            });
            if let Some(original) = original {
                results.push(if original.conv_id == msg.conv_id {
                    Ok(Appended { message: original, duplicate: true })
                } else {
                    Err(StoreError::Conflict(format!(
                        "client_msg_id {:?} was already used for another conversation",
                        msg.client_msg_id
                    )))
                });
                continue;
            }
            in_batch.insert((msg.from, msg.client_msg_id.as_str()), i);
            let seq = seqs.next(msg.conv_id, msg.ts);
            let recipients: Arc<[UserId]> = match msg.conv_id {
                ConvId::Group(g) => match groups.get(&g).and_then(Option::as_ref) {
                    Some(group) => group.members.keys().copied().collect(),
                    None => Arc::from(Vec::new()),
                },
                conv => conv.participants().collect(),
            };
            let message = message_of(msg, seq);
            fresh.push(msg, seq);
            committed.push(Committed { message: message.clone(), from_device: msg.from_device.clone(), recipients });
            results.push(Ok(Appended { message, duplicate: false }));
        }
        let expected = fresh.len();
        let inserted = fresh.insert(&tx).await?;
        if inserted != expected {
            // A key was stored by another node between our check and our insert (in another
            // conversation: ours is locked). The retry finds it among the originals.
            return Err(BatchError::Retry(format!("{} of {expected} messages raced a resend", expected - inserted)));
        }
        seqs.save(&tx).await?;
        tx.commit().await?;
        Ok((results, committed))
    }

    /// One IM operation in its own transaction: lock its scope, load, decide, lock what the
    /// effects append to, apply, commit.
    async fn transact(&self, scope: Scope, decide: Decide) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut held = BTreeSet::new();
        let mut scope_convs = Vec::new();
        scope_convs.extend(scope.group.map(ConvId::Group));
        scope_convs.extend(scope.pair.map(|(a, b)| ConvId::direct(a, b)));
        scope_convs.extend(scope.message.map(|(c, _)| c));
        scope_convs.extend(scope.member.map(|(c, _)| c));
        lock_convs(&tx, &mut held, scope_convs.iter().map(ConvId::to_string)).await.map_err(backend)?;
        let mut seqs = Seqs::load(&tx, scope_convs.iter().copied()).await.map_err(backend)?;
        let mut committed = Vec::new();
        let snapshot = sql::snapshot(&mut PgTx { tx: &tx, seqs: &mut seqs, committed: &mut committed }, &scope).await?;
        let effects = decide(&snapshot).map_err(StoreError::Denied)?;
        let appends: Vec<ConvId> =
            effects.iter().filter_map(|e| if let Effect::Append(m) = e { Some(m.conv_id) } else { None }).collect();
        lock_convs(&tx, &mut held, appends.iter().map(ConvId::to_string)).await.map_err(backend)?;
        seqs.load_more(&tx, appends.iter().copied()).await.map_err(backend)?;
        let mut im = PgTx { tx: &tx, seqs: &mut seqs, committed: &mut committed };
        for effect in effects {
            sql::apply_effect(&mut im, effect).await?;
        }
        seqs.save(&tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        if !committed.is_empty() {
            self.listener.committed(&committed);
        }
        Ok(())
    }
}

pub(super) type BatchDone = (Vec<Result<Appended, StoreError>>, Vec<Committed>);

pub(super) enum BatchError {
    /// Worth another attempt: a deadlock, a serialization failure, a raced resend.
    Retry(String),
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE => {
                BatchError::Retry(e.to_string())
            }
            _ => BatchError::Failed(backend(e)),
        }
    }
}

pub(super) fn message_of(msg: &NewMessage, seq: u64) -> Message {
    Message {
        msg_id: msg.msg_id,
        conv_id: msg.conv_id,
        seq,
        from: msg.from,
        client_msg_id: msg.client_msg_id.clone(),
        ts: msg.ts,
        body: msg.body.clone(),
    }
}

/// Last seqs of the locked conversations, advanced in memory and written back once.
#[derive(Default)]
pub(super) struct Seqs {
    /// conv → (last seq, its time, the seq stored before this transaction).
    convs: HashMap<ConvId, (u64, u64, u64)>,
}

impl Seqs {
    async fn load(
        tx: &tokio_postgres::Transaction<'_>,
        convs: impl IntoIterator<Item = ConvId>,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut seqs = Seqs::default();
        seqs.load_more(tx, convs).await?;
        Ok(seqs)
    }

    async fn load_more(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        convs: impl IntoIterator<Item = ConvId>,
    ) -> Result<(), tokio_postgres::Error> {
        let wanted: BTreeSet<ConvId> = convs.into_iter().filter(|c| !self.convs.contains_key(c)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = wanted.iter().map(ConvId::to_string).collect();
        let rows =
            tx.query("SELECT conv_id, last_seq, last_ts FROM conversations WHERE conv_id = ANY($1)", &[&ids]).await?;
        for c in &wanted {
            self.convs.insert(*c, (0, 0, 0));
        }
        for row in rows {
            if let Ok(conv) = row.get::<_, &str>(0).parse::<ConvId>() {
                let (seq, ts) = (row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64);
                self.convs.insert(conv, (seq, ts, seq));
            }
        }
        Ok(())
    }

    pub(super) fn last(&self, conv: ConvId) -> u64 {
        self.convs.get(&conv).map_or(0, |s| s.0)
    }

    /// The next seq of a locked conversation.
    pub(super) fn next(&mut self, conv: ConvId, ts: u64) -> u64 {
        let entry = self.convs.entry(conv).or_insert((0, 0, 0));
        entry.0 += 1;
        entry.1 = ts;
        entry.0
    }

    /// Writes back every advanced conversation; a conversation's first message makes its
    /// participants members (groups add theirs explicitly).
    async fn save(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let mut ids = Vec::new();
        let mut last = Vec::new();
        let mut ts = Vec::new();
        let mut member_conv = Vec::new();
        let mut member_user = Vec::new();
        for (conv, (seq, t, before)) in &self.convs {
            if seq == before {
                continue;
            }
            ids.push(conv.to_string());
            last.push(*seq as i64);
            ts.push(*t as i64);
            if *before == 0 {
                for u in conv.participants() {
                    member_conv.push(conv.to_string());
                    member_user.push(u.0 as i64);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO conversations (conv_id, last_seq, last_ts) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (conv_id) DO UPDATE SET last_seq = excluded.last_seq, last_ts = excluded.last_ts",
            &[&ids, &last, &ts],
        )
        .await?;
        if !member_conv.is_empty() {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT DO NOTHING",
                &[&member_conv, &member_user],
            )
            .await?;
        }
        Ok(())
    }
}

/// New message rows, inserted with one statement.
#[derive(Default)]
pub(super) struct NewRows {
    conv: Vec<String>,
    seq: Vec<i64>,
    msg_id: Vec<i64>,
    sender: Vec<i64>,
    device: Vec<String>,
    key: Vec<String>,
    ts: Vec<i64>,
    body: Vec<Vec<u8>>,
    counted: Vec<bool>,
}

impl NewRows {
    pub(super) fn push(&mut self, msg: &NewMessage, seq: u64) {
        self.conv.push(msg.conv_id.to_string());
        self.seq.push(seq as i64);
        self.msg_id.push(msg.msg_id.0 as i64);
        self.sender.push(msg.from.0 as i64);
        self.device.push(msg.from_device.0.clone());
        self.key.push(msg.client_msg_id.clone());
        self.ts.push(msg.ts as i64);
        self.body.push(msg.body_json.to_vec());
        self.counted.push(msg.body.is_content());
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    /// Inserts the rows; how many were new (a row whose key exists is skipped).
    pub(super) async fn insert(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<usize, tokio_postgres::Error> {
        if self.seq.is_empty() {
            return Ok(0);
        }
        let n = tx
            .execute(
                "INSERT INTO messages (conv_id, seq, msg_id, sender, sender_device, client_msg_id, ts, body, counted) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
                 $7::bigint[], $8::bytea[], $9::boolean[]) ON CONFLICT (sender, client_msg_id) DO NOTHING",
                &[
                    &self.conv,
                    &self.seq,
                    &self.msg_id,
                    &self.sender,
                    &self.device,
                    &self.key,
                    &self.ts,
                    &self.body,
                    &self.counted,
                ],
            )
            .await?;
        Ok(n as usize)
    }
}

/// For each (recipient, sender): the recipient's message policy and relation towards the
/// sender. A recipient that does not exist is absent.
pub(super) async fn load_dm_rules(
    tx: &tokio_postgres::Transaction<'_>,
    pairs: &[(UserId, UserId)],
) -> Result<HashMap<(UserId, UserId), (DmPolicy, Relation)>, BatchError> {
    let mut out = HashMap::new();
    if pairs.is_empty() {
        return Ok(out);
    }
    let to: Vec<i64> = pairs.iter().map(|p| p.0.0 as i64).collect();
    let from: Vec<i64> = pairs.iter().map(|p| p.1.0 as i64).collect();
    let rows = tx
        .query(
            "SELECT DISTINCT q.to_id, q.from_id, u.dm_policy, r.friend, r.blocked, r.request_msg, r.request_ts \
             FROM unnest($1::bigint[], $2::bigint[]) AS q(to_id, from_id) JOIN users u ON u.id = q.to_id \
             LEFT JOIN relations r ON r.owner = q.to_id AND r.peer = q.from_id",
            &[&to, &from],
        )
        .await?;
    for row in rows {
        let key = (UserId(row.get::<_, i64>(0) as u64), UserId(row.get::<_, i64>(1) as u64));
        let relation = relation_from(&row, 3).map_err(BatchError::Failed)?;
        out.insert(key, (DmPolicy::parse(row.get(2)), relation));
    }
    Ok(out)
}
