-- orders.lua -- the pipeline transform of orders-fanout: runs once per
-- order, before the four sinks.
--
-- Adds the amount in integer cents (what billing wants), renames
-- customer_id to customer, tags the message with the tenant, and drops
-- the load-test orders the shop sends with "test": true. Every other
-- field, 64-bit ids and 2-decimal amounts included, goes on exactly as
-- it came.

function transform(msg)
  local order = msg.json
  if order.test then
    return nil -- dropped: counted, and its offset still commits
  end
  order.amount_cents = math.floor(order.amount * 100 + 0.5)
  order.customer = order.customer_id
  order.customer_id = nil
  msg.headers["x-tenant"] = order.tenant_id
  return msg
end
