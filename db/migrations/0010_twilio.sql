-- The Twilio face (api/handlers/twilio.py): what a call created through it asked for beyond our
-- own fields, and the Auth Token its status callbacks are signed with.

-- Url, Method, Twiml, ApplicationSid, Timeout (accepted and kept, never run) and
-- StatusCallbackMethod of a call created through the Twilio face; NULL for every other call. A
-- call that has it gets its status callbacks as Twilio sends them (calls/twilio.py).
ALTER TABLE calls ADD COLUMN twilio jsonb;

-- A key's Auth Token is its API secret, of which only the SHA-256 is kept otherwise; Twilio signs
-- callbacks with the token itself (HMAC-SHA1), so the platform cannot sign without it. It is
-- kept here, in clear, only once the key has created a call with a StatusCallback through the
-- Twilio face (whose Basic credentials carry it), and cleared when the key is deleted. See
-- docs/RELIABILITY.md ("The Twilio face's Auth Token") for what that trades.
ALTER TABLE api_keys ADD COLUMN auth_token text;
