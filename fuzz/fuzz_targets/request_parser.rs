//! The server's request parser (`durable_resp::RequestParser`) on arbitrary client bytes, fed
//! whole and in pieces of an arbitrary size (the first input byte picks the piece size and
//! whether the client is authenticated): never panics, never holds more than it was fed, and
//! the commands and the error it yields do not depend on how the bytes were split (inputs stay
//! below the 64 KiB inline limit, the one place where Redis's answer does depend on it).
#![no_main]

use durable_resp::RequestParser;
use libfuzzer_sys::fuzz_target;

/// The commands parsed, then the protocol error if one ended the input.
type Outcome = (Vec<Vec<Vec<u8>>>, Option<String>);

fn parse(input: &[u8], piece: usize, unauthenticated: bool) -> Outcome {
    let mut parser = RequestParser::new();
    parser.set_unauthenticated(unauthenticated);
    let mut commands = Vec::new();
    for chunk in input.chunks(piece) {
        parser.feed(chunk);
        loop {
            match parser.next_command() {
                Ok(Some(argv)) => {
                    assert!(!argv.is_empty(), "an empty command was returned");
                    commands.push(argv);
                }
                Ok(None) => break,
                Err(e) => return (commands, Some(format!("{e:?}"))),
            }
        }
        assert!(parser.buffered() <= input.len());
    }
    (commands, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    if input.len() >= 64 * 1024 {
        return;
    }
    let piece = usize::from(control & 0x3f) + 1;
    let unauthenticated = control & 0x40 != 0;
    let whole = parse(input, input.len().max(1), unauthenticated);
    let split = parse(input, piece, unauthenticated);
    assert_eq!(whole, split, "the outcome depends on how the input was split");
});
