-- @describe setACL and addACL: clients outside the ACL get nothing, over UDP and TCP.
-- @query udp www.example.org A from=127.0.0.1 expect=NOERROR
-- @query udp www.example.org A from=127.0.0.2 expect=drop reached=0
-- @query tcp www.example.org A from=127.0.0.2 expect=drop reached=0
-- @query udp www.example.org A from=127.0.0.3 expect=NOERROR
-- @query tcp www.example.org A from=127.0.0.3 expect=NOERROR
-- @query udp www.example.org A from=127.0.1.4 expect=NOERROR
-- @query udp www.example.org A from=127.0.2.4 expect=drop
-- @query udp spoofed.example.org A from=127.0.0.2 expect=drop
-- @query udp spoofed.example.org A from=127.0.0.3 expect=NOERROR
setLocal('{{LISTEN}}')
newServer{address='{{BACKEND}}'}

setACL({'127.0.0.1/32'})
addACL('127.0.0.3/32')
addACL('127.0.1.0/24')
addAction('spoofed.example.org.', SpoofAction('192.0.2.55'))
