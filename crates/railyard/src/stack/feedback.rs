//! The feedback integrations as optional services of the stack: GitHub write-back
//! (`RAILYARD_GITHUB_*`) and CDEvents out (`RAILYARD_CDEVENTS_*`), each started only when its
//! environment configures it, with its ledger under the data directory.

use std::path::Path;

use anyhow::Context as _;
use railyard_core::Catalog;
use railyard_feedback::cdevents::{self, CdeventsConfig};
use railyard_feedback::github::{self, GithubConfig};

use super::{Optional, Started};

/// The optional services the environment configures; `ui_url` is where the console is served
/// (the default for `RAILYARD_UI_URL`, which deployment and pipeline-run links point at).
pub fn from_env(catalog: &Catalog, data_dir: &Path, ui_url: &str) -> anyhow::Result<Vec<Optional>> {
    let ui_set = std::env::var("RAILYARD_UI_URL").is_ok_and(|url| !url.trim().is_empty());
    let mut services = Vec::new();
    if let Some(mut config) = GithubConfig::from_env(catalog.clone(), data_dir.join("github"))
        .context("the github write-back's settings (RAILYARD_GITHUB_*)")?
    {
        if !ui_set {
            config.console_url = ui_url.to_owned();
        }
        services.push(Optional {
            name: "github".into(),
            start: Box::new(move |ctx| {
                config.store = ctx.store;
                config.catalog = ctx.catalog;
                config.metrics = Some(ctx.metrics);
                Ok(Started {
                    task: Some(Box::pin(async move {
                        github::run(config, ctx.bus, ctx.shutdown)
                            .await
                            .context("github write-back")
                    })),
                    routes: None,
                })
            }),
        });
    }
    if let Some(mut config) = CdeventsConfig::from_env(data_dir.join("cdevents"))
        .context("CDEvents out's settings (RAILYARD_CDEVENTS_*)")?
    {
        if !ui_set {
            let default_source = config.source == config.console_url;
            config.console_url = ui_url.to_owned();
            if default_source {
                config.source = ui_url.to_owned();
            }
        }
        services.push(Optional {
            name: "cdevents".into(),
            start: Box::new(move |ctx| {
                config.store = ctx.store;
                config.metrics = Some(ctx.metrics);
                Ok(Started {
                    task: Some(Box::pin(async move {
                        cdevents::run(config, ctx.bus, ctx.shutdown)
                            .await
                            .context("CDEvents out")
                    })),
                    routes: None,
                })
            }),
        });
    }
    Ok(services)
}
