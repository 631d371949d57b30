-- Prepended to every configuration of the differential corpus.
-- No security polling: the servers under test talk to loopback only.
setSecurityPollSuffix('')
