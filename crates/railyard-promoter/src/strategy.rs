//! Deploy strategies of one service in one environment: rolling (one deploy), canary (a deploy
//! at each weight, the service's gates between weights below 100 %) and blue-green (a deploy
//! to the idle colour, its gates, then the switch command; the old colour stays until the
//! release completes and `retire.rs` takes it down). The idle colour is the one the live
//! inventory does not show serving. Recording the step's outcome and the inventory change is
//! the caller's; migrations and verify steps are not deploys and are not here.

use railyard_bus::Bus;
use railyard_core::catalog::{Service, Strategy};
use railyard_core::{Catalog, EnvName, Step};

use crate::adapter::{DEFAULT_TIMEOUT, Form, Outcome, Runner, Target};
use crate::cache::LiveInventory;
use crate::error::PromoterError;
use crate::recorder::{Lost, Recorder};
use crate::verify;

/// Deploys `service` in `env` to `target` with the service's strategy there.
pub(crate) async fn deploy(
    runner: &Runner,
    bus: &Bus,
    recorder: &mut Recorder<'_>,
    service: &Service,
    env: &EnvName,
    target: &Target,
) -> Result<Outcome, Lost> {
    let deploy = service.deploy_in(env);
    let gates = service.gates_in(env);
    match service.strategy_in(env) {
        Strategy::Rolling => Ok(runner.deploy(deploy, Form::Run, target).await),
        Strategy::Canary { steps } => {
            let mut details = Vec::new();
            for weight in steps {
                let at = Target {
                    weight: *weight,
                    ..target.clone()
                };
                let outcome = runner.deploy(deploy, Form::Run, &at).await;
                if !outcome.ok {
                    return Ok(Outcome::failed(format!(
                        "canary at {weight}%: {}",
                        outcome.detail
                    )));
                }
                details.push(format!("{weight}%"));
                if *weight < 100 {
                    let label = format!("canary {weight}%: ");
                    if let Some(failed) =
                        verify::pass(runner, bus, recorder, gates, &at, &label).await?
                    {
                        return Ok(verify::failure(&failed));
                    }
                }
            }
            Ok(Outcome {
                ok: true,
                detail: format!("canary through {}", details.join(", ")),
            })
        }
        Strategy::BlueGreen { switch, .. } => {
            let colour = target.colour.clone().unwrap_or_else(|| other_colour(None));
            let outcome = runner.deploy(deploy, Form::Run, target).await;
            if !outcome.ok {
                return Ok(Outcome::failed(format!(
                    "deploying the idle colour {colour}: {}",
                    outcome.detail
                )));
            }
            let label = format!("{colour} before switch: ");
            if let Some(failed) = verify::pass(runner, bus, recorder, gates, target, &label).await?
            {
                return Ok(verify::failure(&failed));
            }
            let switched = runner.command(switch, target, DEFAULT_TIMEOUT).await;
            if !switched.ok {
                return Ok(Outcome::failed(format!(
                    "switching traffic to {colour}: {}",
                    switched.detail
                )));
            }
            Ok(Outcome {
                ok: true,
                detail: format!(
                    "deployed to {colour} and switched traffic to it; the other colour stays until the release completes"
                ),
            })
        }
    }
}

/// The service's blue-green strategy in the step's environment, when it has one.
pub(crate) fn blue_green<'a>(catalog: &'a Catalog, step: &Step) -> Option<&'a Strategy> {
    let service = catalog.services.get(step.target.as_str())?;
    let strategy = service.strategy_in(&step.env);
    matches!(strategy, Strategy::BlueGreen { .. }).then_some(strategy)
}

/// The colour that is not `serving`: blue when nothing serves yet.
pub(crate) fn other_colour(serving: Option<&str>) -> String {
    if serving == Some("blue") {
        "green"
    } else {
        "blue"
    }
    .to_owned()
}

/// The colour a blue-green deploy goes to: the one not serving traffic in the live inventory.
pub(crate) async fn idle_colour(
    live: &LiveInventory,
    step: &Step,
) -> Result<String, PromoterError> {
    let serving = live.service(&step.env, &step.target).await?;
    Ok(other_colour(serving.and_then(|r| r.colour).as_deref()))
}
