-- Actions written in Python: each query awaits check_name in
-- examples/python_actions.py (a reputation lookup), in its own task, for at most
-- 200 ms; each backend answer awaits scrub_answer. What they return decides, as a
-- Lua action's verdict would; a lookup cut off at 200 ms lets the query go on
-- (setAsyncTimeoutPolicy can make that SERVFAIL or a drop instead).
--
-- The module is found beside this file, and imported when the configuration loads:
--   triodist check-config -C examples/python-action.lua
--   triodist serve --config examples/python-action.lua
--   dig @127.0.0.1 -p 5300 ads.example.org        # status: REFUSED
setLocal("127.0.0.1:5300")
newServer{address="127.0.0.1:5301", name="resolver"}

addAction(AllRule(), PythonAction("python_actions:check_name", 200))
-- Names the service knows to be fine skip the packet cache, say; the tag is the
-- Python function's.
addAction(TagRule("reputation", "allow"), SetSkipCacheAction())
addResponseAction(AllRule(), PythonResponseAction("python_actions:scrub_answer", 200))
