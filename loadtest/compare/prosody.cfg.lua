-- Prosody for the side-by-side benchmark (loadtest/compare/run.sh): loopback only, the same
-- features as the other servers, rate limits lifted.
--
-- Ports: 15322 (c2s, STARTTLS optional so plain-TCP runs work), 15323 (direct TLS),
-- 15380 and 15381 (HTTP and HTTPS: XMPP over WebSocket at /xmpp-websocket, mod_websocket).
-- @DATA@ and @CERTDIR@ are filled in by run.sh.

daemonize = false
pidfile = "@DATA@/prosody.pid"
data_path = "@DATA@"
log = { warn = "@DATA@/prosody.log" }

interfaces = { "127.0.0.1" }
c2s_ports = { 15322 }
c2s_direct_tls_ports = { 15323 }
s2s_ports = {}
component_ports = {}
http_ports = { 15380 }
http_interfaces = { "127.0.0.1" }
https_ports = { 15381 }
https_ssl = {
	certificate = "@CERTDIR@/localhost.crt";
	key = "@CERTDIR@/localhost.key";
}
-- The load tool's upgrade request names 127.0.0.1, not the VirtualHost.
http_default_host = "localhost"

-- Equivalent to ejabberd's: TLS offered, not required; PLAIN allowed in the clear so
-- plain-TCP runs with --mechanism PLAIN work.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"

-- Open in-band registration, without the per-IP throttle.
allow_registration = true
min_seconds_between_registrations = 0
registration_throttle_max = nil

-- No mod_limits: its default caps each client's read rate.
modules_enabled = {
	"roster";
	"saslauth";
	"tls";
	"disco";
	"register";
	"ping";
	"offline";
	"vcard_legacy";
	"smacks";
	"posix";
	"websocket";
	-- Blocking (XEP-0191) and carbons (XEP-0280), as xmppd has them (the load tool's
	-- --blocklist N and --carbons).
	"blocklist";
	"carbons";
}
modules_disabled = { "limits" }

certificates = "@CERTDIR@"

VirtualHost "localhost"
	ssl = {
		certificate = "@CERTDIR@/localhost.crt";
		key = "@CERTDIR@/localhost.key";
	}

Component "conference.localhost" "muc"
	restrict_room_creation = false
	muc_room_default_persistent = false
	muc_room_default_history_length = 0
	muc_max_occupants = 10000
	muc_tombstones = false
