//! The services of one `lks up`: each a task of its own with its slot (the
//! instance the runtime started) and its state (what its dependents wait
//! for). Services are started in dependency order, and when the workspace is
//! reloaded the fleet takes the new definitions: removed services stop
//! (dependents first), changed ones start anew, new ones start. A service's
//! state channel outlives its restarts, so its dependents keep waiting on it.

use crate::config::{Service, Workspace};
use crate::events::{Event, Hub, Status};
use crate::runtime::Runtime;
use crate::service::{self, Slot, State, host};
use crate::steer::Steer;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};

/// One service of the fleet.
struct Member<H> {
    /// Its definition, as it was started.
    service: Service,
    task: tokio::task::JoinHandle<()>,
    slot: Slot<H>,
    state: Channel,
    /// What a host resource's task let go of when it was stopped.
    leftovers: host::Leftovers,
}

/// A service's state channel. One receiver is kept with it: a watch channel
/// without receivers does not keep what is sent (and the service reads its
/// own state back).
#[derive(Clone)]
struct Channel {
    tx: Arc<watch::Sender<State>>,
    _rx: watch::Receiver<State>,
}

impl Channel {
    fn new() -> Channel {
        let (tx, rx) = watch::channel(State::Pending);
        Channel {
            tx: Arc::new(tx),
            _rx: rx,
        }
    }
}

/// The running services of one `lks up`.
pub struct Fleet<R: Runtime> {
    runtime: Arc<R>,
    hub: Hub,
    /// In the order they were started (dependencies first).
    order: Vec<String>,
    members: BTreeMap<String, Member<R::Handle>>,
    /// Services disabled by hand (`lks disable`), kept for `lks enable`.
    disabled: BTreeMap<String, (Service, Channel)>,
    /// The hand on each service's live updates; outlives its restarts.
    steers: BTreeMap<String, Arc<Steer>>,
}

/// What a user asks of one service of a running fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start it anew now: a full sync, its build, its app (`lks trigger`).
    Trigger,
    /// Stop it and what it started; it stays stopped (`lks disable`).
    Disable,
    /// Start a disabled service again (`lks enable`).
    Enable,
    /// Restart its app alone, without a sync or a build (`lks restart`).
    Restart,
    /// Changes wait until triggered (`lks manual`).
    Manual,
    /// Changes apply as they come, the default (`lks auto`).
    Auto,
}

impl Action {
    /// Its name in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Restart => "restart",
            Action::Manual => "manual",
            Action::Auto => "auto",
        }
    }

    /// The action of that name.
    pub fn named(name: &str) -> Option<Action> {
        [
            Action::Trigger,
            Action::Disable,
            Action::Enable,
            Action::Restart,
            Action::Manual,
            Action::Auto,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services started that did not run.
    pub started: Vec<String>,
    /// Services started anew with a new definition.
    pub restarted: Vec<String>,
    /// Services stopped (no longer defined or wanted).
    pub stopped: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, names) in [
            ("started", &self.started),
            ("restarted with its new definition", &self.restarted),
            ("stopped", &self.stopped),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        }
        if parts.is_empty() {
            f.write_str("no service changed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Whether two definitions of a service are the same. Definitions hold
/// compiled matchers, which compare by their debug form (the same patterns
/// give the same form).
fn same_definition(a: &Service, b: &Service) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl<R: Runtime + 'static> Fleet<R> {
    /// An empty fleet on `runtime`, reporting to `hub`.
    pub fn new(runtime: Arc<R>, hub: Hub) -> Fleet<R> {
        Fleet {
            runtime,
            hub,
            order: Vec::new(),
            members: BTreeMap::new(),
            disabled: BTreeMap::new(),
            steers: BTreeMap::new(),
        }
    }

    /// Starts `order` (dependencies first) as `ws` defines them.
    pub fn start_all(&mut self, ws: &Workspace, order: &[String]) {
        for name in order {
            self.start(ws.services[name].clone(), None);
        }
    }

    /// Starts `service`, on `state` when it ran before (its dependents wait
    /// on that channel).
    fn start(&mut self, service: Service, state: Option<Channel>) {
        let name = service.name.clone();
        let deps = service
            .deps
            .iter()
            .filter_map(|d| Some((d.clone(), self.members.get(d)?.state.tx.subscribe())))
            .collect();
        let state = state.unwrap_or_else(Channel::new);
        state.tx.send_replace(State::Pending);
        let slot: Slot<R::Handle> = Arc::new(Mutex::new(None));
        let steer = self.steer(&name);
        let leftovers = host::Leftovers::default();
        let task = match service.host {
            // No runtime starts a host resource: its own task runs it.
            Some(_) => tokio::spawn(host::run(
                service.clone(),
                self.hub.service(&name),
                deps,
                state.tx.clone(),
                leftovers.clone(),
                steer,
            )),
            None => tokio::spawn(service::run(
                service.clone(),
                self.runtime.clone(),
                self.hub.service(&name),
                deps,
                state.tx.clone(),
                slot.clone(),
                steer,
            )),
        };
        self.order.retain(|n| *n != name);
        self.order.push(name.clone());
        self.members.insert(
            name,
            Member {
                service,
                task,
                slot,
                state,
                leftovers,
            },
        );
    }

    /// Stops the service `name` (its task, then what the runtime started);
    /// its state channel, for a start anew.
    async fn stop(&mut self, name: &str) -> Option<Channel> {
        let member = self.members.remove(name)?;
        self.order.retain(|n| n != name);
        member.task.abort();
        let _ = member.task.await;
        member.leftovers.stop().await;
        let to = self.hub.service(name);
        if let Some(instance) = member.slot.lock().await.take()
            && let Err(e) = self.runtime.stop(&member.service, instance).await
        {
            to.send(Event::StopFailed(e.to_string()));
        }
        to.status(Status::Stopped);
        Some(member.state)
    }

    /// Takes the definitions of `ws` for the services of `order`.
    pub async fn reload(&mut self, ws: &Workspace, order: &[String]) -> Changes {
        let mut changes = Changes::default();
        // Dependents first.
        let running: Vec<String> = self.order.iter().rev().cloned().collect();
        for name in &running {
            if !order.contains(name) {
                self.stop(name).await;
                changes.stopped.push(name.clone());
            }
        }
        // Disabled ones stay disabled (with their new definition, for enable).
        self.disabled.retain(|name, _| order.contains(name));
        for name in order {
            let new = &ws.services[name];
            if let Some((service, _)) = self.disabled.get_mut(name) {
                *service = new.clone();
                continue;
            }
            match self.members.get(name) {
                Some(m) if same_definition(&m.service, new) => {}
                Some(_) => {
                    let state = self.stop(name).await;
                    self.start(new.clone(), state);
                    changes.restarted.push(name.clone());
                }
                None => {
                    self.start(new.clone(), None);
                    changes.started.push(name.clone());
                }
            }
        }
        changes
    }

    /// Does `action` to `name`; what was done, or why not.
    pub async fn act(&mut self, action: Action, name: &str) -> Result<&'static str, String> {
        let steer = self.steer(name);
        match action {
            Action::Trigger if self.members.contains_key(name) && steer.held() > 0 => {
                steer.release();
                Ok("applying the changes that waited")
            }
            Action::Restart if self.members.contains_key(name) && steer.is_live() => {
                steer.restart_app();
                Ok("restarting its app")
            }
            Action::Trigger | Action::Restart => {
                let Some(service) = self.members.get(name).map(|m| m.service.clone()) else {
                    return Err(self.not_running(name));
                };
                let state = self.stop(name).await;
                self.start(service, state);
                Ok(match action {
                    Action::Restart => "started anew (it has no live app to restart alone)",
                    _ => "started anew",
                })
            }
            Action::Manual | Action::Auto => {
                if !self.members.contains_key(name) && !self.disabled.contains_key(name) {
                    return Err(self.not_running(name));
                }
                let manual = action == Action::Manual;
                steer.set_manual(manual);
                self.hub.service(name).send(Event::TriggerMode { manual });
                Ok(match manual {
                    true => "changes now wait for a trigger",
                    false => "changes apply as they come",
                })
            }
            Action::Disable => {
                let Some(service) = self.members.get(name).map(|m| m.service.clone()) else {
                    return Err(self.not_running(name));
                };
                let state = self.stop(name).await.unwrap_or_else(Channel::new);
                self.hub.service(name).status(Status::Disabled);
                self.disabled.insert(name.to_string(), (service, state));
                Ok("disabled")
            }
            Action::Enable => {
                let Some((service, state)) = self.disabled.remove(name) else {
                    return match self.members.contains_key(name) {
                        true => Ok("runs already"),
                        false => Err(format!("no service {name:?} in this run")),
                    };
                };
                self.start(service, Some(state));
                Ok("enabled")
            }
        }
    }

    /// The hand on `name`'s live updates (made on first use).
    fn steer(&mut self, name: &str) -> Arc<Steer> {
        self.steers.entry(name.to_string()).or_default().clone()
    }

    fn not_running(&self, name: &str) -> String {
        if self.disabled.contains_key(name) {
            format!("{name} is disabled (lks enable {name})")
        } else {
            format!("no service {name:?} in this run")
        }
    }

    /// Stops every service, dependents first.
    pub async fn stop_all(&mut self) {
        // Every task first, so none starts anything while others stop.
        for m in self.members.values() {
            m.task.abort();
        }
        let names: Vec<String> = self.order.iter().rev().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }
}
