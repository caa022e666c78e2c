-- billing-bug.lua -- billing.lua with a planted bug: every tenth order's
-- amount is a cent off. Reconcile must find exactly those.
function transform(msg)
  local o = msg.json
  local cents = o.amount_cents
  if o.n % 10 == 0 then
    cents = cents + 1
  end
  return {json = {invoice_ref = o.order_id, amount_cents = cents}}
end
