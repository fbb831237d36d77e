-- Tells every session replica listening on xmppd_credentials which account's credentials
-- changed, whoever changed them, when the change commits (src/credential_cache.rs).
-- Postgres folds identical notifications of one transaction into one.

CREATE FUNCTION notify_credentials_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('xmppd_credentials', OLD.jid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('xmppd_credentials', NEW.jid);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER credentials_changed
    AFTER INSERT OR UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION notify_credentials_changed();
