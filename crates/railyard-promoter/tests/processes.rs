//! What a deploy command leaves behind: a command that outlives its timeout is killed with
//! every process it started (its own process group), so a grandchild cannot keep running
//! against production after Railyard reported the step failed.

use std::time::Duration;

use railyard_core::ManualClock;
use railyard_promoter::Secrets;
use railyard_promoter::adapter::{Runner, Target};
use railyard_testkit::wait_until;

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_timed_out_command_takes_its_grandchildren_with_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("grandchild.pid");
    let clock = ManualClock::new(chrono::Utc::now());
    let runner = Runner {
        clock: clock.shared(),
        secrets: Secrets::default(),
        http: reqwest::Client::new(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 1024,
        seed: 0,
    };
    // The deploy script starts a long-running grandchild and waits for it.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
    let run = tokio::spawn(async move {
        runner
            .command(&argv, &Target::default(), Duration::from_secs(60))
            .await
    });
    let grandchild: i32 = wait_until("the grandchild to start", Duration::from_secs(10), || {
        let pidfile = pidfile.clone();
        async move {
            Ok(std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse().ok()))
        }
    })
    .await?;
    assert!(alive(grandchild), "the grandchild runs before the timeout");

    // The step's time runs out on the clock.
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(60));
    let outcome = run.await?;
    assert!(!outcome.ok, "{}", outcome.detail);
    assert!(
        outcome.detail.contains("did not finish within") && outcome.detail.contains("killed"),
        "{}",
        outcome.detail
    );
    wait_until(
        "the grandchild to be killed",
        Duration::from_secs(10),
        || async { Ok((!alive(grandchild)).then_some(())) },
    )
    .await?;
    Ok(())
}
