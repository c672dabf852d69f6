//! A ten-line echo server on the sockmod library: every frame goes back to its sender.
//!
//! Run: `cargo run --release --example echo -- 127.0.0.1:0` (prints the bound address).
use sockmod::net::{Config, ConnId, Context, Handler, Node};
use sockmod::protocol::Message;

struct Echo;

impl Handler for Echo {
    type Command = ();
    fn on_message(&mut self, ctx: &mut Context<'_>, from: ConnId, msg: Message) {
        let _ = ctx.send_owned(from, &msg.header, msg.body);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:63335".into());
    let mut node = Node::new(Config::default(), Echo)?;
    eprintln!("listening on {}", node.listen(&addr)?);
    node.run().map(|_| ())
}
