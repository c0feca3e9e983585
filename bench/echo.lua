-- wrk script for ferry-bench's "echo" workload: POST /echo with a 4 KiB body.
-- Used as: wrk -s bench/echo.lua http://127.0.0.1:PORT/echo
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 256) -- 4096 bytes
wrk.headers["Content-Type"] = "application/octet-stream"
