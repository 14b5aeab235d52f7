//! `serve`: from checked arguments to a running server, in the order the
//! flags need. Sockets are bound, the log is mapped (and locked with `-k`)
//! and the replication log registered while we may still be root; then
//! `-u` drops to its user, and what that user should own is made after
//! (the `-s` socket, the admin socket, the pidfile), as memcached does.

use std::sync::Arc;

use super::daemon::{self, Pidfile, Readiness};
use super::options::ServeArgs;
use super::Fail;
use logmemcached::auth::{self, AuthToken};
use logmemcached::error::{Context, Result};
use logmemcached::memory::region::HugePages;
use logmemcached::replication::{self, primary::SlotTable, replica::ReplicaOptions, Replication, Trust, Url};
use logmemcached::runtime::{default_output_budget, IoMode, Runtime, Settings};
use logmemcached::server;
use logmemcached::store::{Store, StoreConfig};

/// The `Settings` the flags describe (the token and budgets filled in).
fn settings(a: &ServeArgs, token: Option<AuthToken>) -> Settings {
    let memory_bytes = a.memory_limit << 20;
    let d = Settings::default();
    Settings {
        port: a.port,
        listen: if a.listen.is_empty() { d.listen.clone() } else { a.listen.join(",") },
        unix_socket: a.unix_socket.clone(),
        unix_mask: a.unix_mask,
        backlog: a.backlog,
        protocol: a.protocol,
        evictions: a.evictions,
        cas_enabled: a.cas_enabled,
        reqs_per_event: a.reqs_per_event,
        auth_file: a.auth_file.clone(),
        ascii_auth: None,
        detail_delimiter: a.detail_delimiter.unwrap_or(d.detail_delimiter),
        detail_enabled: a.detail_delimiter.is_some(),
        disable_dumping: !a.dumping_enabled,
        disable_watch: !a.watch_enabled,
        memory_file: a.memory_file.clone(),
        idle_timeout: a.ext.idle_timeout,
        track_sizes: a.ext.track_sizes,
        watcher_logbuf_size: a.ext.watcher_logbuf_size.unwrap_or(d.watcher_logbuf_size),
        worker_logbuf_size: a.ext.worker_logbuf_size.unwrap_or(d.worker_logbuf_size),
        memory_bytes,
        threads: a.threads,
        conn_limit: a.conn_limit,
        max_item_size: a.max_item_size,
        poll: a.poll,
        io: a.io,
        hugepages: a.hugepages,
        idle_spins: a.idle_spins.unwrap_or_else(|| default_idle_spins(a.threads)),
        rdma_listen: a.rdma_listen.clone(),
        rdma: server::rdma::budgets(
            memory_bytes,
            a.max_item_size,
            a.rdma_rc_memory.map(|mb| mb.saturating_mul(1 << 20)),
        ),
        enable_shutdown: a.enable_shutdown,
        flush_enabled: a.flush_enabled,
        admin_socket: a.admin_socket.clone(),
        admin_socket_mode: a.admin_socket_mode,
        auth_token: token,
        output_budget: a
            .output_budget
            .or(a.ext.read_buf_mem_limit)
            .unwrap_or_else(|| default_output_budget(memory_bytes, a.conn_limit)),
    }
}

pub fn serve(mut a: ServeArgs) -> std::result::Result<(), Fail> {
    logmemcached::logging::set_verbosity(a.verbose);
    let readiness = Readiness::begin(a.coredumps);
    if readiness.is_some() {
        for p in [&mut a.pidfile, &mut a.unix_socket, &mut a.memory_file, &mut a.admin_socket, &mut a.auth_file] {
            daemon::absolute(p);
        }
        daemon::absolute(&mut a.latency_log);
        daemon::absolute(&mut a.auth_token_file);
    }
    for n in &a.ext.notices {
        logmemcached::log_notice!("{n}");
    }
    // memcached refuses to run as root without -u; that would break every
    // root-run setup of ours (tests, containers), so it is a warning here.
    let user = match (&a.user, daemon::is_root()) {
        (Some(name), true) => Some(daemon::lookup_user(name)?),
        (Some(name), false) => {
            logmemcached::log_notice!("-u {name}: not running as root, so there is no identity to drop (as memcached)");
            None
        }
        (None, true) => {
            logmemcached::log_warn!("running as root without -u (memcached refuses this: give -u USER to drop root)");
            None
        }
        (None, false) => None,
    };
    if a.coredumps {
        daemon::enable_coredumps()?;
    }
    if a.lock_memory {
        daemon::check_memlock(
            !daemon::is_root() || user.as_ref().is_some_and(|u| !u.uid.is_root()),
            a.memory_limit << 20,
        )?;
    }
    let token = a.auth_token_file.as_deref().map(AuthToken::load).transpose().context("--auth-token-file")?;
    let shm_group = a.shm_group.as_deref().map(replication::shm::parse_group).transpose()?;
    let mut settings = settings(&a, token.clone());
    // memcached reads the -Y file at start and refuses to run without it.
    if let Some(p) = &a.auth_file {
        settings.ascii_auth = Some(Arc::new(logmemcached::auth::ascii::AsciiAuth::load(p)?));
    }
    // Before anything opens descriptors of its own: fail early, as memcached does.
    server::ensure_fd_limit(&settings)?;
    settings.io = server::choose_io(&settings)?;
    if settings.io == IoMode::Uring && a.idle_spins.is_none() {
        // A uring worker's blocking wait is the same io_uring_enter that
        // submits its sends, and what arrives while it spins needs an enter
        // of its own to be collected (deferred task work): spinning saves
        // no system call and costs one per wakeup, and CPU (perf/results/io.md).
        settings.idle_spins = 0;
    }
    let listeners = a
        .replication_listen
        .iter()
        .map(|u| u.parse::<Url>().map_err(logmemcached::error::Error::new))
        .collect::<Result<Vec<_>>>()
        .context("--replication-listen")?;
    let replica_of = match &a.replica_of {
        Some(u) => Some(u.parse::<Url>().map_err(logmemcached::error::Error::new).context("--replica-of")?),
        None => None,
    };
    // Safe defaults: a listener that hands out the cache stays on loopback
    // unless it checks a token (or the operator says --insecure).
    for u in &listeners {
        if let Url::Rdma { host, .. } = u {
            auth::check_exposure(&format!("--replication-listen {u}"), host, token.as_ref(), a.insecure)?;
        }
    }
    if let Some(l) = &settings.rdma_listen {
        let host = l.rsplit_once(':').map_or(l.as_str(), |(h, _)| h);
        auth::check_exposure("--rdma-listen", host, token.as_ref(), a.insecure)?;
    }
    // An shm listener puts the log in a file its replicas can map.
    let shm_name = listeners.iter().find_map(|u| match u {
        Url::Shm(name) => Some(name.clone()),
        _ => None,
    });
    // With -e the memory file is the region, and the shm name links to it.
    let region_file = shm_name.as_deref().map(|n| replication::shm::region_path(n, a.hugepages != HugePages::Off));
    let cfg = StoreConfig {
        memory_bytes: settings.memory_bytes,
        max_item_size: settings.max_item_size,
        hugepages: settings.hugepages,
    };
    let store = Arc::new(match &settings.memory_file {
        Some(f) => Store::open_memory_file(&cfg, f).context("-e")?,
        None => Store::open(&cfg, region_file.as_deref()).context("creating the item log")?,
    });
    // -M: refuse an item write rather than evict (a replica applies its
    // primary's records whatever this says; promoted, it honours it).
    store.set_evictions(settings.evictions);
    if let (Some(n), Some(f)) = (&shm_name, &settings.memory_file) {
        replication::shm::link_region(n, a.hugepages != HugePages::Off, f)?;
    }
    if let (Some(p), Some(g)) = (settings.memory_file.as_ref().or(region_file.as_ref()), shm_group) {
        replication::shm::share_with_group(p, g)?;
    }
    if let Some(n) = &shm_name {
        replication::shm::prepare_slot_dir(n, shm_group)?;
    }
    let slots = Arc::new(SlotTable::new(store.log().clone(), shm_name.clone().map(|n| (n, shm_group))));
    slots.set_ringing(a.sync_replicas > 0);
    if a.sync_replicas > 0 {
        store.set_sync_wait(replication::primary::sync_waiter(
            slots.clone(),
            a.sync_replicas,
            std::time::Duration::from_millis(a.sync_timeout),
        ));
    }
    let snap = store.snapshot();
    if snap.backing == logmemcached::memory::region::Backing::Normal && a.hugepages == HugePages::Auto {
        logmemcached::log_notice!(
            "no 2 MiB huge pages reserved; the log uses normal pages (with THP advice). \
             Reserve some (hugepages/logmemcached-hugepages) or pass --hugepages off to silence this."
        );
    }
    let mut listener_sets = server::bind(&settings)?;
    // Registering the log with the NIC pins it: before -u, which may take
    // away the memlock limit root has.
    for u in &listeners {
        if let Url::Rdma { host, port } = u {
            replication::verbs::listen(store.log().region().clone(), host, *port, token.clone(), a.verbose > 0)
                .with_context(|| format!("--replication-listen {u}"))?;
        }
    }
    if a.lock_memory {
        daemon::lock_memory()?;
    }
    if let Some(u) = &user {
        let slot_dir = shm_name.as_deref().map(replication::shm::slot_dir);
        let mut handover: Vec<&std::path::Path> = Vec::new();
        handover.extend(region_file.as_deref());
        handover.extend(slot_dir.as_deref());
        handover.extend(settings.memory_file.as_deref());
        daemon::drop_privileges(u, &handover)?;
    }
    let _unix = server::listen::bind_unix(&settings, &mut listener_sets)?;
    let rt = Arc::new(Runtime::new(settings, a.verbose));
    store.set_eviction_hook(rt.watch.eviction_hook());
    logmemcached::logging::follow(rt.verbosity_handle());
    let shared = server::Shared::new(rt.clone())?;
    server::install_shutdown_signals(shared.clone())?;
    // After the signals are blocked: its thread inherits the mask.
    let latency_log = match &a.latency_log {
        Some(p) => Some(logmemcached::latency::LatencyLog::start(
            p,
            std::time::Duration::from_secs(a.latency_log_interval),
            rt.workers.clone(),
        )?),
        None => None,
    };
    let opts = ReplicaOptions {
        promote_after: a.promote_after.map(std::time::Duration::from_millis),
        promote_drain: std::time::Duration::from_millis(a.promote_drain_ms),
        id: logmemcached::log::random_u64(),
    };
    let trust = Trust { token, shm_group };
    let repl =
        Arc::new(Replication::new(store.clone(), listeners, opts, a.sync_replicas, a.verbose > 0, trust, slots)?);
    if let Some(url) = replica_of {
        repl.follow(url)?;
    }
    let _ = rt.replication.set(repl.clone());
    let pidfile = a.pidfile.as_deref().map(Pidfile::write).transpose()?;
    if a.verbose > 0 {
        logmemcached::log_info!(
            "serving on {} with {} threads, {} MiB log ({} bytes usable)",
            rt.settings
                .unix_socket
                .as_ref()
                .map_or_else(|| format!("{}:{}", rt.settings.listen, rt.settings.port), |p| p.display().to_string()),
            rt.settings.threads,
            a.memory_limit,
            snap.log_capacity
        );
    }
    // Listeners are bound, so connections queue from here on.
    if let Some(r) = readiness {
        r.ready();
    }
    let served = server::serve(listener_sets, store, shared);
    if let Some(l) = latency_log {
        // Writes the last partial interval.
        l.stop();
    }
    repl.shutdown();
    match (region_file, shm_name, rt.settings.memory_file.is_some()) {
        (Some(p), Some(n), false) => {
            // Replicas that still map it keep their copy; new ones must not find a dead log.
            replication::shm::remove_files(&n, &p, shm_group);
        }
        (Some(p), Some(_), true) => {
            // The memory file stays, and so do the slot files: a restart
            // continues the history its replicas (still mapping the file) hold.
            let _ = std::fs::remove_file(p);
        }
        _ => {}
    }
    drop(pidfile);
    Ok(served?)
}

/// Spin before blocking only when there is a core the workers do not use:
/// measured on 2 cores with a load generator beside us, spinning cost more
/// than half the get throughput (perf/results/memcaslap.md).
fn default_idle_spins(threads: usize) -> u32 {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if threads < cores {
        2000
    } else {
        0
    }
}
