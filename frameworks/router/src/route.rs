//! A service's live route: its backends and balancing state for one table
//! version, and the slot listeners read it from.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::backend::{BackendState, InFlight};
use crate::balance::{Picker, Scope};
use crate::config::RouterConfig;
use crate::stats::AppCounters;

/// What one listener serves, HTTP or TCP alike.
#[derive(Debug)]
pub(crate) struct ListenerCtx {
    pub(crate) slot: Arc<Slot>,
    pub(crate) serve: Serve,
    pub(crate) config: Arc<RouterConfig>,
}

/// The route of one service for one applied table.
#[derive(Debug)]
pub(crate) struct Route {
    /// The version a preview port serves, if the service has one.
    pub(crate) preview: Option<String>,
    pub(crate) backends: Vec<Arc<BackendState>>,
    picker: Mutex<Picker>,
    pub(crate) counters: Arc<AppCounters>,
}

/// Where a listener finds its service's current route; an apply swaps the
/// route in place, so open client connections follow table changes.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    route: RwLock<Option<Arc<Route>>>,
}

impl Slot {
    pub(crate) fn current(&self) -> Option<Arc<Route>> {
        self.route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, route: Option<Arc<Route>>) {
        *self.route.write().unwrap_or_else(PoisonError::into_inner) = route;
    }
}

/// Which listener of a service: the weighted service port, or the preview
/// port serving the route's preview version.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Serve {
    Weighted,
    Preview,
}

impl Route {
    pub(crate) fn new(
        preview: Option<String>,
        backends: Vec<Arc<BackendState>>,
        picker: Picker,
        counters: Arc<AppCounters>,
    ) -> Route {
        Route {
            preview,
            backends,
            picker: Mutex::new(picker),
            counters,
        }
    }

    /// Chooses a routed backend not in `tried` and counts the new request
    /// on it. A backend found unrouted (a later apply removed it) joins
    /// `tried` and the choice goes on.
    pub(crate) fn choose(
        &self,
        serve: Serve,
        prefer: Option<&str>,
        tried: &mut Vec<usize>,
    ) -> Option<(usize, InFlight)> {
        loop {
            let scope = match serve {
                Serve::Weighted => Scope::Weighted,
                Serve::Preview => Scope::Only(self.preview.as_deref()?),
            };
            let index = {
                let mut picker = self.picker.lock().unwrap_or_else(PoisonError::into_inner);
                picker.pick(
                    scope,
                    prefer,
                    &|i| !tried.contains(&i) && self.backends[i].is_routed(),
                    &|i| self.backends[i].in_flight(),
                )?
            };
            match self.backends[index].acquire() {
                Some(guard) => return Some((index, guard)),
                None => tried.push(index),
            }
        }
    }
}

/// The tries of one request or connection: the first backend, then up to
/// `max_retries` others, each preferring the version of the one before.
#[derive(Debug)]
pub(crate) struct Tries<'a> {
    route: &'a Route,
    serve: Serve,
    max_retries: u32,
    tried: Vec<usize>,
    attempts: usize,
    prefer: Option<String>,
}

impl<'a> Tries<'a> {
    pub(crate) fn new(route: &'a Route, ctx: &ListenerCtx) -> Tries<'a> {
        Tries {
            route,
            serve: ctx.serve,
            max_retries: ctx.config.max_retries,
            tried: Vec::new(),
            attempts: 0,
            prefer: None,
        }
    }

    /// How many backends were tried so far.
    pub(crate) fn count(&self) -> usize {
        self.attempts
    }

    /// The next backend to try, counted in flight; `None` when the tries
    /// are used up or no backend is left.
    pub(crate) fn next_backend(&mut self) -> Option<(&'a Arc<BackendState>, InFlight)> {
        if self.attempts > self.max_retries as usize {
            return None;
        }
        let route = self.route;
        let (index, guard) = route.choose(self.serve, self.prefer.as_deref(), &mut self.tried)?;
        if self.attempts > 0 {
            route.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.attempts += 1;
        self.tried.push(index);
        let backend = &route.backends[index];
        self.prefer = Some(backend.version.clone());
        Some((backend, guard))
    }
}
