//! Every example of `examples/` run against a server started here, each on its own port: the
//! test calls the example's `run` (the code its `main` runs) and checks what it did.

use std::time::Duration;

use hibiki::app::{ServeApp, ServeConfig};
use hibiki::reactor::{Running, Server};

#[allow(dead_code)]
#[path = "../examples/chat_client.rs"]
mod chat_client;
#[allow(dead_code)]
#[path = "../examples/collab_edit.rs"]
mod collab_edit;
#[allow(dead_code)]
#[path = "../examples/dashboard_feed.rs"]
mod dashboard_feed;
#[allow(dead_code)]
#[path = "../examples/game_loop.rs"]
mod game_loop;
#[allow(dead_code)]
#[path = "../examples/notifications.rs"]
mod notifications;

const API_KEY: &str = "examples-key";

/// `hibiki serve` as the binary runs it: 60 Hz ticks, `game:*` tick rooms, an API key.
fn server() -> (Running<ServeApp>, String) {
    let mut config = ServeConfig::default();
    config.api_key = Some(API_KEY.into());
    let server = Server::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .threads(2)
        .tick(Some(Duration::from_secs(1) / 60))
        .start(ServeApp::new(config))
        .expect("server starts");
    let url = format!("ws://{}/ws", server.local_addr());
    (server, url)
}

#[test]
fn chat_two_users_see_each_other_type_talk_and_read() {
    let (server, url) = server();
    let summary = chat_client::run(&url, "chat:example").expect("the chat example runs");
    let expected = ["Hello Ann! Is the release out?", "Yes, 0.1 shipped an hour ago."];
    assert_eq!(summary.ann_saw, expected, "Ann saw Bob's message and her own reply");
    assert_eq!(summary.bob_saw, expected, "Bob saw his message and Ann's reply");
    assert!(summary.ann_saw_typing, "Ann saw Bob typing");
    assert_eq!(summary.bob_saw_read_up_to, Some(1), "Bob got Ann's read receipt for seq 1");
    assert_eq!(summary.members_at_bob_join, 2);
    server.shutdown();
}

#[test]
fn notifications_reach_the_user_by_api_room_and_direct() {
    let (server, url) = server();
    let summary = notifications::run(&url, API_KEY).expect("the notifications example runs");
    assert_eq!(summary.api_statuses, [200, 200]);
    let inbox = format!("user:{}", summary.user);
    let mut received = summary.received.clone();
    received.sort();
    let mut expected = vec![
        (inbox.clone(), "Your order shipped".to_owned()),
        ("news".to_owned(), "Maintenance at 02:00 UTC".to_owned()),
        (inbox, "Payment received".to_owned()),
    ];
    expected.sort();
    assert_eq!(received, expected);
    // With a wrong key the API refuses, and `direct` still gets through.
    let refused = notifications::run(&url, "wrong").expect("runs");
    assert_eq!(refused.api_statuses, [401, 401]);
    assert_eq!(refused.received.len(), 1);
    server.shutdown();
}

#[test]
fn dashboard_feed_delivers_every_sample_in_order() {
    let (server, url) = server();
    let summary =
        dashboard_feed::run(&url, 4, Duration::from_millis(250)).expect("the dashboard example runs");
    assert_eq!(summary.published, 4);
    let numbers: Vec<u64> = summary.received.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert!(summary.received.iter().all(|(_, rps)| *rps > 500.0));
    server.shutdown();
}

#[test]
fn collab_edit_converges_and_resumes_exactly_what_was_missed() {
    let (server, url) = server();
    let summary = collab_edit::run(&url, "doc:example").expect("the editing example runs");
    assert_eq!(summary.alice, "hibiki echoes every message once.");
    assert_eq!(summary.bruno, summary.alice, "the copies converge");
    assert_eq!(summary.replayed, 3, "the three changes made while Bruno was away");
    assert!(summary.cursors_seen >= 1, "Alice saw Bruno's cursor");
    server.shutdown();
}

#[test]
fn game_loop_players_get_snapshots_in_batches_and_the_host_their_inputs() {
    let (server, url) = server();
    let summary = game_loop::run(&url, Duration::from_millis(1500)).expect("the game example runs");
    assert!(summary.frames >= 60, "the host ran frames: {}", summary.frames);
    assert!(summary.inputs >= 20, "the host applied inputs: {}", summary.inputs);
    assert_eq!(summary.players.len(), 2);
    for &(batches, snapshots, last_frame) in &summary.players {
        assert!(batches >= 10, "players get batch frames: {batches}");
        // A batch holds the newest snapshot of its tick (and the other player's input, or a
        // presence event, which some batches hold alone).
        assert!((10..=batches).contains(&snapshots), "snapshots in batches: {snapshots} in {batches}");
        assert!(last_frame >= 30, "players followed the game: last frame {last_frame}");
    }
    assert_eq!(summary.positions.len(), 2, "both players moved: {:?}", summary.positions);
    server.shutdown();
}
