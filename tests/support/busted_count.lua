-- busted output handler for tests/run: busted's utfTerminal output, plus one line per spec
-- file that busted loaded, "== tests in <file>: <n>" (n counts every test that ended, whatever
-- its status), so that the runner can refuse a spec file that ran no test.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.utfTerminal")(options)
  local counts, order = {}, {}

  local function file_of(element)
    local e = element
    while e and e.descriptor ~= "file" do e = busted.parent(e) end
    return e and e.name
  end

  busted.subscribe({ "file", "start" }, function(file)
    if counts[file.name] == nil then
      counts[file.name] = 0
      order[#order + 1] = file.name
    end
    return nil, true
  end)
  busted.subscribe({ "test", "end" }, function(element)
    local f = file_of(element)
    if f then counts[f] = (counts[f] or 0) + 1 end
    return nil, true
  end)
  busted.subscribe({ "suite", "end" }, function()
    io.write("\n")
    for _, f in ipairs(order) do io.write("== tests in ", f, ": ", counts[f], "\n") end
    io.flush()
    return nil, true
  end)
  return handler
end
