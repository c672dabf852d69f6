# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sockmod_global_optspecs
    string join \n h/help V/version
end

function __fish_sockmod_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sockmod_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sockmod_using_subcommand
    set -l cmd (__fish_sockmod_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sockmod -n "__fish_sockmod_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_needs_command" -s V -l version -d 'Print version'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "serve" -d 'Listen, keep many clients, print what they send, send back'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "connect" -d 'Connect to one or more servers and talk to them'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "ipserver" -d 'Discovery server of the filer network: collect reports, multicast the roster'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "filer" -d 'LAN peer: report to an ipserver, talk to peers, send and receive files'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c sockmod -n "__fish_sockmod_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -s b -l bind -d 'Address to listen on: HOST:PORT or PORT (port 0: any free port)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l allow -d 'Admit only peers in this address or network (e.g. 192.168.1.0/24, ::1); repeatable. Without it, everyone not denied is admitted' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l deny -d 'Refuse peers in this address or network; repeatable; wins over --allow. Refused peers are closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l max-conns-per-ip -d 'Most connections at once from one address; more are closed at once, with one notice per address per burst; 0 for no limit. Default: 16 for filer and ipserver (a LAN peer needs a handful), none for serve' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l handshake-timeout -d 'Close an accepted connection that has not sent one whole frame within this long (`off` for no limit). Default: 10s for filer and ipserver, off for serve (a client may connect and wait before it speaks)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -s c -l command -d 'Run this command line instead of reading commands from stdin or a prompt, as `sh -c` does; repeatable, run in order. Then as at the end of piped input: connect exits once everything is flushed, the listening modes keep running until `quit` (give `-c quit` last to stop them), SIGINT or SIGTERM. stdin is left free for a body: `send * -f -`' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l body-format -d 'How message bodies are shown' -r -f -a "auto\t'Text when printable UTF-8, else a short hex preview (JSON: `body`, or `body_base64` when not UTF-8)'
text\t'Always as text, invalid UTF-8 replaced (JSON: `body`)'
hex\t'Hex of the whole body (JSON: `body_hex`)'
base64\t'Base64 of the whole body (JSON: `body_base64`)'
none\t'Length only'"
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l max-body -d 'Largest body accepted from a peer (e.g. 64MiB, 1GB, 4096); a frame declaring more closes that connection. Default: 64MiB; 4MiB for filer, whose own frames are 256KiB file chunks' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l max-pending-bodies -d 'Bytes of partly received frames held for all connections together; over it, the connection holding the largest is closed and the others carry on' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l max-queue -d 'Largest outbound queue per connection: a peer that does not read while its queue is over this is dropped as a slow consumer. Also the largest file `send -f` reads. Commands (typed or piped) wait while any queue is over 3/4 of it, and go on once every queue is under half: a script waits for its readers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l write-timeout -d 'Drop a peer whose queued output waited this long with nothing of it written, as a slow consumer (a reader that stopped or trickles); `off` to keep such peers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l max-conns -d 'Most connections at once; more are accepted and closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l heartbeat -d 'Send a TP:Check probe on a connection after sending it nothing for this long (e.g. 5s), so quiet links stay up; off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l idle-timeout -d 'Close a connection that sent nothing (not even a probe) for this long (e.g. 30s, 1m); off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-cert -d 'PEM certificate chain: the listener\'s, or the client certificate a dial presents when the server asks' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-client-ca -d 'Listening: require client certificates issued by this CA (PEM)' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-ca -d 'Dialling: trust servers whose certificate this CA (PEM) issued, instead of the system\'s roots' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-pin -d 'Dialling: trust exactly the certificate with this SHA-256 fingerprint (64 hex digits, colons optional, as `listening on` prints); repeatable' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l json -d 'Events as JSON lines on stdout (one object per line)'
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -s q -l quiet -d 'Do not show message events (`list` still counts them)'
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls -d 'Listening modes: accept TLS only (with a certificate from --tls-cert and --tls-key, or one generated on first use and kept in the state directory). connect: dial every ADDR with TLS. A single dial can also say tls://HOST:PORT'
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -l tls-insecure -d 'Dialling: do not verify the server\'s certificate (still encrypted, but anyone on the path can pretend to be the server); warns on every connection'
complete -c sockmod -n "__fish_sockmod_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -s c -l command -d 'Run this command line instead of reading commands from stdin or a prompt, as `sh -c` does; repeatable, run in order. Then as at the end of piped input: connect exits once everything is flushed, the listening modes keep running until `quit` (give `-c quit` last to stop them), SIGINT or SIGTERM. stdin is left free for a body: `send * -f -`' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l body-format -d 'How message bodies are shown' -r -f -a "auto\t'Text when printable UTF-8, else a short hex preview (JSON: `body`, or `body_base64` when not UTF-8)'
text\t'Always as text, invalid UTF-8 replaced (JSON: `body`)'
hex\t'Hex of the whole body (JSON: `body_hex`)'
base64\t'Base64 of the whole body (JSON: `body_base64`)'
none\t'Length only'"
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l max-body -d 'Largest body accepted from a peer (e.g. 64MiB, 1GB, 4096); a frame declaring more closes that connection. Default: 64MiB; 4MiB for filer, whose own frames are 256KiB file chunks' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l max-pending-bodies -d 'Bytes of partly received frames held for all connections together; over it, the connection holding the largest is closed and the others carry on' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l max-queue -d 'Largest outbound queue per connection: a peer that does not read while its queue is over this is dropped as a slow consumer. Also the largest file `send -f` reads. Commands (typed or piped) wait while any queue is over 3/4 of it, and go on once every queue is under half: a script waits for its readers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l write-timeout -d 'Drop a peer whose queued output waited this long with nothing of it written, as a slow consumer (a reader that stopped or trickles); `off` to keep such peers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l max-conns -d 'Most connections at once; more are accepted and closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l heartbeat -d 'Send a TP:Check probe on a connection after sending it nothing for this long (e.g. 5s), so quiet links stay up; off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l idle-timeout -d 'Close a connection that sent nothing (not even a probe) for this long (e.g. 30s, 1m); off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-cert -d 'PEM certificate chain: the listener\'s, or the client certificate a dial presents when the server asks' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-client-ca -d 'Listening: require client certificates issued by this CA (PEM)' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-ca -d 'Dialling: trust servers whose certificate this CA (PEM) issued, instead of the system\'s roots' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-pin -d 'Dialling: trust exactly the certificate with this SHA-256 fingerprint (64 hex digits, colons optional, as `listening on` prints); repeatable' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l stay -d 'At end of piped input, keep running until every connection closes (without it: exit once everything sent is flushed)'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l json -d 'Events as JSON lines on stdout (one object per line)'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -s q -l quiet -d 'Do not show message events (`list` still counts them)'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls -d 'Listening modes: accept TLS only (with a certificate from --tls-cert and --tls-key, or one generated on first use and kept in the state directory). connect: dial every ADDR with TLS. A single dial can also say tls://HOST:PORT'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -l tls-insecure -d 'Dialling: do not verify the server\'s certificate (still encrypted, but anyone on the path can pretend to be the server); warns on every connection'
complete -c sockmod -n "__fish_sockmod_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -s b -l bind -d 'Address to listen on: HOST:PORT or PORT (port 0: any free port)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l interval -d 'How often the roster is multicast to the peers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l alive -d 'A peer stays in the roster this long after its last report' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l secret -d 'A passphrase every link (filer to filer, filer to ipserver) must prove, over TLS, without revealing it (SPAKE2): peers with another passphrase or none, and plaintext peers, are refused. Also read from SOCKMOD_SECRET (better than the command line, which other users can see)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l secret-file -d 'Read the --secret passphrase from the first line of FILE' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l allow -d 'Admit only peers in this address or network (e.g. 192.168.1.0/24, ::1); repeatable. Without it, everyone not denied is admitted' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l deny -d 'Refuse peers in this address or network; repeatable; wins over --allow. Refused peers are closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l max-conns-per-ip -d 'Most connections at once from one address; more are closed at once, with one notice per address per burst; 0 for no limit. Default: 16 for filer and ipserver (a LAN peer needs a handful), none for serve' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l handshake-timeout -d 'Close an accepted connection that has not sent one whole frame within this long (`off` for no limit). Default: 10s for filer and ipserver, off for serve (a client may connect and wait before it speaks)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -s c -l command -d 'Run this command line instead of reading commands from stdin or a prompt, as `sh -c` does; repeatable, run in order. Then as at the end of piped input: connect exits once everything is flushed, the listening modes keep running until `quit` (give `-c quit` last to stop them), SIGINT or SIGTERM. stdin is left free for a body: `send * -f -`' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l body-format -d 'How message bodies are shown' -r -f -a "auto\t'Text when printable UTF-8, else a short hex preview (JSON: `body`, or `body_base64` when not UTF-8)'
text\t'Always as text, invalid UTF-8 replaced (JSON: `body`)'
hex\t'Hex of the whole body (JSON: `body_hex`)'
base64\t'Base64 of the whole body (JSON: `body_base64`)'
none\t'Length only'"
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l max-body -d 'Largest body accepted from a peer (e.g. 64MiB, 1GB, 4096); a frame declaring more closes that connection. Default: 64MiB; 4MiB for filer, whose own frames are 256KiB file chunks' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l max-pending-bodies -d 'Bytes of partly received frames held for all connections together; over it, the connection holding the largest is closed and the others carry on' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l max-queue -d 'Largest outbound queue per connection: a peer that does not read while its queue is over this is dropped as a slow consumer. Also the largest file `send -f` reads. Commands (typed or piped) wait while any queue is over 3/4 of it, and go on once every queue is under half: a script waits for its readers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l write-timeout -d 'Drop a peer whose queued output waited this long with nothing of it written, as a slow consumer (a reader that stopped or trickles); `off` to keep such peers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l max-conns -d 'Most connections at once; more are accepted and closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l heartbeat -d 'Send a TP:Check probe on a connection after sending it nothing for this long (e.g. 5s), so quiet links stay up; off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l idle-timeout -d 'Close a connection that sent nothing (not even a probe) for this long (e.g. 30s, 1m); off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-cert -d 'PEM certificate chain: the listener\'s, or the client certificate a dial presents when the server asks' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-client-ca -d 'Listening: require client certificates issued by this CA (PEM)' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-ca -d 'Dialling: trust servers whose certificate this CA (PEM) issued, instead of the system\'s roots' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-pin -d 'Dialling: trust exactly the certificate with this SHA-256 fingerprint (64 hex digits, colons optional, as `listening on` prints); repeatable' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l json -d 'Events as JSON lines on stdout (one object per line)'
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -s q -l quiet -d 'Do not show message events (`list` still counts them)'
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls -d 'Listening modes: accept TLS only (with a certificate from --tls-cert and --tls-key, or one generated on first use and kept in the state directory). connect: dial every ADDR with TLS. A single dial can also say tls://HOST:PORT'
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -l tls-insecure -d 'Dialling: do not verify the server\'s certificate (still encrypted, but anyone on the path can pretend to be the server); warns on every connection'
complete -c sockmod -n "__fish_sockmod_using_subcommand ipserver" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l id -d 'This peer\'s name: at most 255 bytes, no `,` `;` `:` or control characters, no leading or trailing spaces' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -s b -l bind -d 'Address to listen on; if its port is taken, the next ones up are tried (up to 100; port 0: any free port)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l ipserver -d 'The ipserver to report to (HOST:PORT, or HOST for port 5000); retried while it is unreachable' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l report-interval -d 'How often to report to the ipserver (also how often to retry it, within 100ms to 5s, while it is unreachable)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l inbox -d 'Where received files are written (created if missing)' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-file-size -d 'Refuse incoming files larger than this (e.g. 4GiB); without it, only files that would leave less than --min-free are refused' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l accept-files -d 'Which incoming files are taken: ask (each offer waits for `accept tN` or `refuse tN`), yes (all), no (none; the sender is told why), known (those from pinned peers; ask about the rest)' -r -f -a "ask\t'Show each offer; `accept tN` or `refuse tN` answers it'
yes\t'Accept incoming files into --inbox'
no\t'Refuse every incoming file; the sender is told why'
known\t'Accept files from pinned peers; ask about the others'"
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l offer-timeout -d 'An offer not answered within this is refused (the sender is told)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l transfer-timeout -d 'An incoming file that moves no byte for this long fails (its part file and descriptor are released)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l keep-partial -d 'Incomplete received files kept for resuming (in INBOX/.sockmod-partial), and folders cut short (in INBOX/.sockmod-staging), are deleted at start once untouched for this long' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l min-free -d 'Free space to keep on the inbox\'s disk: a file is refused when it and the files being received would leave less [default: 1GiB, or 5% of a smaller disk]' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l secret -d 'A passphrase every link (filer to filer, filer to ipserver) must prove, over TLS, without revealing it (SPAKE2): peers with another passphrase or none, and plaintext peers, are refused. Also read from SOCKMOD_SECRET (better than the command line, which other users can see)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l secret-file -d 'Read the --secret passphrase from the first line of FILE' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l allow -d 'Admit only peers in this address or network (e.g. 192.168.1.0/24, ::1); repeatable. Without it, everyone not denied is admitted' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l deny -d 'Refuse peers in this address or network; repeatable; wins over --allow. Refused peers are closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-conns-per-ip -d 'Most connections at once from one address; more are closed at once, with one notice per address per burst; 0 for no limit. Default: 16 for filer and ipserver (a LAN peer needs a handful), none for serve' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l handshake-timeout -d 'Close an accepted connection that has not sent one whole frame within this long (`off` for no limit). Default: 10s for filer and ipserver, off for serve (a client may connect and wait before it speaks)' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -s c -l command -d 'Run this command line instead of reading commands from stdin or a prompt, as `sh -c` does; repeatable, run in order. Then as at the end of piped input: connect exits once everything is flushed, the listening modes keep running until `quit` (give `-c quit` last to stop them), SIGINT or SIGTERM. stdin is left free for a body: `send * -f -`' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l body-format -d 'How message bodies are shown' -r -f -a "auto\t'Text when printable UTF-8, else a short hex preview (JSON: `body`, or `body_base64` when not UTF-8)'
text\t'Always as text, invalid UTF-8 replaced (JSON: `body`)'
hex\t'Hex of the whole body (JSON: `body_hex`)'
base64\t'Base64 of the whole body (JSON: `body_base64`)'
none\t'Length only'"
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-body -d 'Largest body accepted from a peer (e.g. 64MiB, 1GB, 4096); a frame declaring more closes that connection. Default: 64MiB; 4MiB for filer, whose own frames are 256KiB file chunks' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-pending-bodies -d 'Bytes of partly received frames held for all connections together; over it, the connection holding the largest is closed and the others carry on' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-queue -d 'Largest outbound queue per connection: a peer that does not read while its queue is over this is dropped as a slow consumer. Also the largest file `send -f` reads. Commands (typed or piped) wait while any queue is over 3/4 of it, and go on once every queue is under half: a script waits for its readers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l write-timeout -d 'Drop a peer whose queued output waited this long with nothing of it written, as a slow consumer (a reader that stopped or trickles); `off` to keep such peers' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l max-conns -d 'Most connections at once; more are accepted and closed at once, with a notice' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l heartbeat -d 'Send a TP:Check probe on a connection after sending it nothing for this long (e.g. 5s), so quiet links stay up; off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l idle-timeout -d 'Close a connection that sent nothing (not even a probe) for this long (e.g. 30s, 1m); off unless given' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-cert -d 'PEM certificate chain: the listener\'s, or the client certificate a dial presents when the server asks' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-client-ca -d 'Listening: require client certificates issued by this CA (PEM)' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-ca -d 'Dialling: trust servers whose certificate this CA (PEM) issued, instead of the system\'s roots' -r -F
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-pin -d 'Dialling: trust exactly the certificate with this SHA-256 fingerprint (64 hex digits, colons optional, as `listening on` prints); repeatable' -r
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l require-encryption -d 'Refuse peers that cannot encrypt (original Python/Qt peers, which speak plaintext): on the listening port and when dialling'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l plaintext -d 'Run as an original peer does: no key, no TLS, names taken on their word (for comparisons and for debugging with a packet capture)'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l json -d 'Events as JSON lines on stdout (one object per line)'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -s q -l quiet -d 'Do not show message events (`list` still counts them)'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls -d 'Listening modes: accept TLS only (with a certificate from --tls-cert and --tls-key, or one generated on first use and kept in the state directory). connect: dial every ADDR with TLS. A single dial can also say tls://HOST:PORT'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -l tls-insecure -d 'Dialling: do not verify the server\'s certificate (still encrypted, but anyone on the path can pretend to be the server); warns on every connection'
complete -c sockmod -n "__fish_sockmod_using_subcommand filer" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "serve" -d 'Listen, keep many clients, print what they send, send back'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "connect" -d 'Connect to one or more servers and talk to them'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "ipserver" -d 'Discovery server of the filer network: collect reports, multicast the roster'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "filer" -d 'LAN peer: report to an ipserver, talk to peers, send and receive files'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c sockmod -n "__fish_sockmod_using_subcommand help; and not __fish_seen_subcommand_from serve connect ipserver filer completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
