//! This node among the others: what it applies from their control messages (sessions ended
//! there, rooms moved to another area, presence) and what it tells them about itself (load,
//! rooms, presence numbering) — the one home of cluster control on this side of the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_proto::CloseReason;
use tokio_util::sync::CancellationToken;

use super::Logic;
use crate::bus::{Bus, Control};
use crate::cluster::NodeStatus;
use crate::config::Config;
use crate::dispatch::{Registry, Router};

impl Logic {
    /// Applies another node's change: to what logic holds in memory (the store has it already)
    /// and to this node's connections (sessions ended there are closed here too).
    pub fn apply_control(&self, control: &Control, router: &Router) {
        let registry = router.registry();
        match control {
            Control::SessionCutoff { user, device, after_ms } => {
                self.auth.set_cutoff(*user, device.clone(), *after_ms);
                let closed = registry.kick_user(*user, device.as_ref(), CloseReason::AuthFailed);
                tracing::info!(user_id = user.0, closed, "sessions ended on another node");
            }
            Control::RoomSanction { sanction, lifted } => {
                self.live.apply(sanction, *lifted);
                if !lifted && sanction.kind == tern_proto::rest::SanctionKind::Ban {
                    let kicked = router.kick_from_room(&sanction.room, sanction.user_id, &sanction.reason);
                    self.live.left(&sanction.room, sanction.user_id, kicked);
                }
            }
            Control::RoomSettings { settings } => self.live.apply_settings(settings.clone()),
            Control::RoomArea { room, area } => {
                self.room_areas.lock().insert(room.clone(), area.clone());
                registry.set_area(room, area);
            }
            Control::PresenceDelta { .. } | Control::PresenceResync { .. } | Control::PresenceSnapshot { .. } => {
                self.presence.apply(control)
            }
        }
    }
}

/// This node's status, less the numbers (filled in each time it is shared): where clients reach
/// it — `wss://` under TLS, and its QUIC address when QUIC runs.
pub fn own_status(cfg: &Config, http: SocketAddr, tcp: SocketAddr, quic: Option<SocketAddr>, tls: bool) -> NodeStatus {
    let scheme = if tls { "wss" } else { "ws" };
    let ws = if cfg.server.advertise_ws.is_empty() {
        format!("{scheme}://{http}/v1/ws")
    } else {
        cfg.server.advertise_ws.clone()
    };
    let tcp = if cfg.server.advertise_tcp.is_empty() { tcp.to_string() } else { cfg.server.advertise_tcp.clone() };
    NodeStatus {
        node: cfg.cluster.node_id,
        ws,
        tcp,
        quic: quic.map(|q| q.to_string()).unwrap_or_default(),
        connections: 0,
        draining: false,
        rooms: Vec::new(),
        presence_epoch: 0,
        presence_seq: 0,
    }
}

/// Tells the other nodes this node's load, rooms and presence numbering every `every`, and once
/// more, as draining, when it stops; and brings this node's view of the others' presence up to
/// date with their statuses.
pub async fn share_status(
    registry: Arc<Registry>,
    presence: Arc<crate::logic::presence::Presence>,
    bus: Arc<dyn Bus>,
    mut status: NodeStatus,
    every: Duration,
    members_list_max: usize,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        status.connections = registry.local_total();
        status.rooms = registry.local_rooms(members_list_max);
        status.draining = stopping || registry.draining();
        (status.presence_epoch, status.presence_seq) = presence.position();
        bus.share_status(&status);
        presence.reconcile(&registry.peers().live());
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_under_tls_hands_out_wss_and_its_quic_address() {
        let cfg = Config::default();
        let (http, tcp, quic) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let plain = own_status(&cfg, http, tcp, None, false);
        assert_eq!((plain.ws.as_str(), plain.quic.as_str()), ("ws://127.0.0.1:1/v1/ws", ""));
        let tls = own_status(&cfg, http, tcp, Some(quic), true);
        assert_eq!(
            (tls.ws.as_str(), tls.tcp.as_str(), tls.quic.as_str()),
            ("wss://127.0.0.1:1/v1/ws", "127.0.0.1:2", "127.0.0.1:2")
        );
    }
}
