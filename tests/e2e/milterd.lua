-- miltertest script: drives milterd directly, as a Sendmail-flavoured MTA (OpenDKIM's
-- libmilter-style client), with no MTA running. Run by tests/e2e/test_miltertest.py:
--
--   miltertest -D MILTER=inet:11332@127.0.0.1 -D MODE=ladder -s tests/e2e/milterd.lua
--
-- MODE=ladder expects milterd with [options] gtube_patterns = "all" and
-- [milter] reject_action = "reject"; MODE=quarantine expects reject_action = "quarantine".
-- Prints "ok"/"FAIL" per check and "N passed, N failed"; exits 1 if any check failed
-- (miltertest prints no Lua error text, so every failure is echoed first).

local sock = MILTER or "inet:11332@127.0.0.1"
local mode = MODE or "ladder"
local passed, failed = 0, 0
local TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

local function check(cond, what)
  if cond then
    passed = passed + 1
    mt.echo("ok   - " .. what)
  else
    failed = failed + 1
    mt.echo("FAIL - " .. what)
  end
end

local function must(result, what)
  -- mt.* calls return nil on success and an error string otherwise
  if result ~= nil then
    mt.echo("FAIL - " .. what .. ": " .. tostring(result))
    error(what)
  end
end

local function open()
  local conn = mt.connect(sock, 10, 0.2)
  if conn == nil then
    mt.echo("FAIL - mt.connect(" .. sock .. ")")
    error("connect")
  end
  mt.set_timeout(10)
  must(mt.negotiate(conn, nil, nil, nil), "negotiate")
  must(mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.test", "{client_addr}", "203.0.113.5"), "connect macros")
  must(mt.conninfo(conn, "mail.sender.test", "203.0.113.5"), "conninfo")
  must(mt.helo(conn, "mail.sender.test"), "helo")
  return conn
end

-- one message on an open connection; returns after end of message
local function message(conn, qid, subject, body)
  must(mt.macro(conn, SMFIC_MAIL, "i", qid, "{mail_addr}", "alice@sender.test"), "mail macros")
  must(mt.mailfrom(conn, "<alice@sender.test>"), "mailfrom")
  must(mt.rcptto(conn, "<rcpt@example.test>"), "rcptto")
  must(mt.header(conn, "From", "Alice <alice@sender.test>"), "header From")
  must(mt.header(conn, "To", "rcpt@example.test"), "header To")
  must(mt.header(conn, "Subject", subject), "header Subject")
  must(mt.header(conn, "Date", os.date("!%a, %d %b %Y %H:%M:%S +0000")), "header Date")
  must(mt.header(conn, "Message-ID", "<" .. qid .. "@sender.test>"), "header Message-ID")
  -- no mt.eoh(): milterd negotiates SMFIP_NOEOH, and miltertest refuses to send it then
  must(mt.bodystring(conn, "Hello,\r\n" .. body .. "\r\nBye\r\n"), "body")
  must(mt.eom(conn), "eom")
end

if mode == "ladder" then
  local c = open()

  message(c, "MT0001", "lunch on friday", "shall we have lunch on friday?")
  check(mt.getreply(c) == SMFIR_ACCEPT, "plain -> accept")
  check(mt.eom_check(c, MT_HDRADD, "X-Spamd-Result"), "plain -> X-Spamd-Result added")
  local status = mt.getheader(c, "X-Spam-Status", 0)
  check(status ~= nil and string.find(status, "^No, score=") ~= nil,
        "plain -> X-Spam-Status: No (" .. tostring(status) .. ")")
  check(not mt.eom_check(c, MT_HDRADD, "X-Spam"), "plain -> no X-Spam header")
  check(not mt.eom_check(c, MT_HDRCHANGE, "Subject"), "plain -> Subject untouched")

  -- same connection, next message (exercises the per-message reset)
  message(c, "MT0002", "offer", "Y" .. TAIL)
  check(mt.getreply(c) == SMFIR_ACCEPT, "YJS -> accept")
  check(mt.eom_check(c, MT_HDRADD, "X-Spam", "Yes"), "YJS -> X-Spam: Yes added")
  check(not mt.eom_check(c, MT_HDRCHANGE, "Subject"), "YJS -> Subject untouched")

  message(c, "MT0003", "old subject", "Z" .. TAIL)
  check(mt.getreply(c) == SMFIR_ACCEPT, "ZJS -> accept")
  check(mt.eom_check(c, MT_HDRCHANGE, "Subject", "*** SPAM *** old subject"), "ZJS -> Subject rewritten")
  check(mt.eom_check(c, MT_HDRADD, "X-Spam", "Yes"), "ZJS -> X-Spam: Yes added")

  message(c, "MT0004", "reject me", "X" .. TAIL)
  check(mt.getreply(c) == SMFIR_REPLYCODE, "XJS -> SMFIR_REPLYCODE")
  -- miltertest matches MT_SMTPREPLY only with code, enhanced code and exact text
  check(mt.eom_check(c, MT_SMTPREPLY, "554", "5.7.1", "Gtube pattern"), "XJS -> 554 5.7.1 Gtube pattern")
  check(not mt.eom_check(c, MT_HDRADD, "X-Spam"), "XJS -> no header edits on a rejected message")
  mt.disconnect(c)
elseif mode == "quarantine" then
  local c = open()
  message(c, "MT0005", "quarantine me", "X" .. TAIL)
  check(mt.getreply(c) == SMFIR_ACCEPT, "XJS -> accept (held by the MTA)")
  check(mt.eom_check(c, MT_QUARANTINE), "XJS -> quarantine requested")
  check(mt.eom_check(c, MT_QUARANTINE, "Spam message quarantined"), "XJS -> quarantine reason")
  check(mt.eom_check(c, MT_HDRADD, "X-Spam", "Yes"), "XJS -> X-Spam: Yes on the held copy")
  mt.disconnect(c)
else
  mt.echo("FAIL - unknown MODE " .. mode)
  failed = failed + 1
end

mt.echo(string.format("%d passed, %d failed", passed, failed))
if failed > 0 then error("miltertest: " .. failed .. " check(s) failed") end
