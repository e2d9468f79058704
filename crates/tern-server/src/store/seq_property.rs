//! Property (a test module): whatever the number of concurrent senders, messages each and resends, one
//! conversation's seqs are strictly increasing per sender, gap-free overall, and a resent
//! client_msg_id gets its original seq back without a new row.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{StoreConfig, Synchronous};
use crate::store::conformance::{new_message, null_listener, seed_users};
use crate::store::sqlite::SqliteStore;
use crate::store::{Page, Store};
use proptest::prelude::*;
use tern_proto::{ConvId, UserId};

fn run(senders: usize, per_sender: usize, resend_every: usize, max_batch: usize) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig { synchronous: Synchronous::Normal, max_batch, readers: 2, ..StoreConfig::default() };
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path(), &cfg, null_listener(), crate::logic::rules::ImRules::shared()).unwrap(),
        );
        // The 1:1 send path checks the recipient exists: users 1 and 2.
        assert_eq!(seed_users(&*store, 2).await, vec![UserId(1), UserId(2)]);
        let conv = ConvId::direct(UserId(1), UserId(2));
        let mut tasks = Vec::new();
        for s in 0..senders {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let from = UserId(1 + (s % 2) as u64);
                let mut mine = Vec::new();
                for i in 0..per_sender {
                    let key = format!("s{s}m{i}");
                    let t = store.append(new_message(conv, from, &key)).await.unwrap();
                    let a = t.await.unwrap().unwrap();
                    assert!(!a.duplicate);
                    if resend_every > 0 && i % resend_every == 0 {
                        let again = store.append(new_message(conv, from, &key)).await.unwrap().await.unwrap().unwrap();
                        assert!(again.duplicate);
                        assert_eq!(again.message.seq, a.message.seq);
                    }
                    mine.push(a.message.seq);
                }
                mine
            }));
        }
        let mut all = BTreeMap::new();
        for t in tasks {
            let mine = t.await.unwrap();
            prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-sender seqs increase: {:?}", mine);
            for seq in mine {
                prop_assert!(all.insert(seq, ()).is_none(), "seq {} given twice", seq);
            }
        }
        let n = (senders * per_sender) as u64;
        prop_assert_eq!(all.keys().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
        let stored = store.messages(conv, Page::After(0), 500).await.unwrap();
        prop_assert_eq!(stored.len() as u64, n.min(500), "one row per message");
        prop_assert_eq!(store.last_seq(conv).await.unwrap(), n);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_senders_get_strictly_increasing_gap_free_seqs(
        senders in 1usize..8,
        per_sender in 1usize..40,
        resend_every in 0usize..5,
        max_batch in prop::sample::select(vec![1usize, 3, 64, 512]),
    ) {
        run(senders, per_sender, resend_every, max_batch)?;
    }
}
