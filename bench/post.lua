-- wrk script for the benchmark's ceiling B (sinkd's request rate): one POST
-- per request with a ~260-byte JSON order, like each of sluice's requests.
--   wrk -t2 -c64 -d5s -s bench/post.lua http://127.0.0.1:PORT/x
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"order_id":"ord-000000002","tenant_id":"tenant-02",' ..
           '"customer_id":"cust-567360","sequence":9007199254740995,' ..
           '"amount":326.06,"currency":"EUR","items":[{"sku":"SKU-78779",' ..
           '"qty":2,"price":163.03}],"created_at":"2026-11-29T18:00:02Z",' ..
           '"status":"cancelled","note":"bench"}'
