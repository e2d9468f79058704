use super::*;
use crate::store::conformance::{self, Recorder};

/// The database to test against (`TERN_TEST_POSTGRES`, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`). Without it the tests print a notice and pass,
/// unless `TERN_REQUIRE_POSTGRES` is set (CI sets both).
fn test_url() -> Option<String> {
    match std::env::var("TERN_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("TERN_REQUIRE_POSTGRES").is_none(),
                "TERN_REQUIRE_POSTGRES is set but TERN_TEST_POSTGRES is not"
            );
            eprintln!("SKIPPED: set TERN_TEST_POSTGRES=postgres://… to run the PostgreSQL store tests");
            None
        }
    }
}

/// Options for a fresh schema of its own (tests run in parallel on one database).
fn fresh(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        max_batch: 256,
        schema: Some(format!("tern_test_{:016x}", rand::random::<u64>())),
    }
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((c, conn)) = tokio_postgres::connect(url, NoTls).await {
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some(url) = test_url() else { return };
    let schemas = parking_lot::Mutex::new(Vec::new());
    conformance::run_all(&mut |listener| {
        let opts = fresh(&url);
        schemas.lock().push(opts.schema.clone().unwrap());
        Box::pin(async move {
            Arc::new(PostgresStore::open(&opts, listener, crate::logic::rules::ImRules::shared()).await.unwrap())
                as Arc<dyn Store>
        })
    })
    .await;
    for s in schemas.into_inner() {
        drop_schema(&url, &s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_writing_one_conversation_share_one_gap_free_sequence() {
    let Some(url) = test_url() else { return };
    let opts = fresh(&url);
    // Opened at the same moment, as nodes started together: the schema is created and
    // migrated once, without a race.
    let opened = futures_util::future::join_all((0..3).map(|_| {
        let opts = opts.clone();
        async move {
            let recorder = Arc::new(Recorder::default());
            let store =
                PostgresStore::open(&opts, recorder.clone(), crate::logic::rules::ImRules::shared()).await.unwrap();
            (Arc::new(store) as Arc<dyn Store>, recorder)
        }
    }))
    .await;
    conformance::nodes_share_one_gap_free_sequence(&opened).await;
    drop_schema(&url, opts.schema.as_deref().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused_and_reopening_keeps_data() {
    let Some(url) = test_url() else { return };
    let opts = fresh(&url);
    let conv = ConvId::direct(UserId(1), UserId(2));
    {
        let store = PostgresStore::open(&opts, conformance::null_listener(), crate::logic::rules::ImRules::shared())
            .await
            .unwrap();
        assert_eq!(conformance::seed_users(&store, 2).await, vec![UserId(1), UserId(2)]);
        let t = store.append(conformance::new_message(conv, UserId(1), "c1")).await.unwrap();
        assert_eq!(t.await.unwrap().unwrap().message.seq, 1);
    }
    let store =
        PostgresStore::open(&opts, conformance::null_listener(), crate::logic::rules::ImRules::shared()).await.unwrap();
    let t = store.append(conformance::new_message(conv, UserId(2), "c2")).await.unwrap();
    assert_eq!(t.await.unwrap().unwrap().message.seq, 2, "seq continues after reopening");
    store.execute("UPDATE tern_schema SET version = 99", &[]).await.unwrap();
    match PostgresStore::open(&opts, conformance::null_listener(), crate::logic::rules::ImRules::shared()).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("schema version 99"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    drop_schema(&url, opts.schema.as_deref().unwrap()).await;
}
