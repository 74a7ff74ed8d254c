//! The connection state machine. SKELETON.
/// Config.
#[derive(Debug)]
pub struct Config;
/// Connection.
#[derive(Debug)]
pub struct Connection;
/// Event.
#[derive(Debug)]
pub enum Event {}
/// MessageKind.
#[derive(Debug)]
pub enum MessageKind {}
