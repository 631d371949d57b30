-- Constant tables available to dnsdist configurations.
-- Values match dnsdist 1.7.3; names added by later dnsdist releases are
-- appended with the values those releases use.

-- DNSAction: verdicts a LuaAction function may return
DNSAction = {
  Drop = 0,
  Nxdomain = 1,
  Refused = 2,
  Spoof = 3,
  Allow = 4,
  HeaderModify = 5,
  Pool = 6,
  Delay = 7,
  Truncate = 8,
  ServFail = 9,
  None = 10,
  NoOp = 11,
  NoRecurse = 12,
  SpoofRaw = 13,
  SpoofPacket = 14,
  SetTag = 15,
}

-- DNSResponseAction: verdicts a LuaResponseAction function may return
DNSResponseAction = {
  Allow = 0,
  Delay = 1,
  Drop = 2,
  HeaderModify = 3,
  ServFail = 4,
  None = 5,
  Truncate = 6, -- newer releases renumber this group: Truncate = 5, None = 6
}

-- DNSRCode: response codes, including the extended (EDNS/TSIG) ones
DNSRCode = {
  NOERROR = 0,
  FORMERR = 1,
  SERVFAIL = 2,
  NXDOMAIN = 3,
  NOTIMP = 4,
  REFUSED = 5,
  YXDOMAIN = 6,
  YXRRSET = 7,
  NXRRSET = 8,
  NOTAUTH = 9,
  NOTZONE = 10,
  BADVERS = 16,
  BADSIG = 16,
  BADKEY = 17,
  BADTIME = 18,
  BADMODE = 19,
  BADNAME = 20,
  BADALG = 21,
  BADTRUNC = 22,
  BADCOOKIE = 23,
}

-- DNSQType: record types by mnemonic
DNSQType = {
  A = 1,
  NS = 2,
  CNAME = 5,
  SOA = 6,
  MB = 7,
  MG = 8,
  MR = 9,
  PTR = 12,
  HINFO = 13,
  MINFO = 14,
  MX = 15,
  TXT = 16,
  RP = 17,
  AFSDB = 18,
  SIG = 24,
  KEY = 25,
  AAAA = 28,
  LOC = 29,
  SRV = 33,
  NAPTR = 35,
  KX = 36,
  CERT = 37,
  A6 = 38,
  DNAME = 39,
  OPT = 41,
  APL = 42,
  DS = 43,
  SSHFP = 44,
  IPSECKEY = 45,
  RRSIG = 46,
  NSEC = 47,
  DNSKEY = 48,
  DHCID = 49,
  NSEC3 = 50,
  NSEC3PARAM = 51,
  TLSA = 52,
  SMIMEA = 53,
  RKEY = 57,
  CDS = 59,
  CDNSKEY = 60,
  OPENPGPKEY = 61,
  CSYNC = 62,
  ZONEMD = 63,
  SVCB = 64,
  HTTPS = 65,
  HHIT = 67,
  BRID = 68,
  SPF = 99,
  NID = 104,
  L32 = 105,
  L64 = 106,
  LP = 107,
  EUI48 = 108,
  EUI64 = 109,
  TKEY = 249,
  TSIG = 250,
  IXFR = 251,
  AXFR = 252,
  MAILB = 253,
  MAILA = 254,
  ANY = 255,
  URI = 256,
  CAA = 257,
  RESINFO = 261,
  WALLET = 262,
  DLV = 32769,
  ADDR = 65400,
  ALIAS = 65401,
  LUA = 65402,
}

-- DNSClass: query classes
DNSClass = {
  IN = 1,
  CHAOS = 3,
  NONE = 254,
  ANY = 255,
}

-- DNSOpcode: header opcodes
DNSOpcode = {
  Query = 0,
  IQuery = 1,
  Status = 2,
  Notify = 4,
  Update = 5,
}

-- DNSSection: message sections
DNSSection = {
  Question = 0,
  Answer = 1,
  Authority = 2,
  Additional = 3,
}

-- EDNSOptionCode: EDNS option codes
EDNSOptionCode = {
  NSID = 3,
  DAU = 5,
  DHU = 6,
  N3U = 7,
  ECS = 8,
  EXPIRE = 9,
  COOKIE = 10,
  TCPKEEPALIVE = 11,
  PADDING = 12,
  CHAIN = 13,
  KEYTAG = 14,
}

-- DNSCryptExchangeVersion: DNSCrypt certificate exchange versions
DNSCryptExchangeVersion = {
  VERSION1 = 0,
  VERSION2 = 1,
}

-- pdns_features: optional features on offer (none are advertised)
pdns_features = {}
