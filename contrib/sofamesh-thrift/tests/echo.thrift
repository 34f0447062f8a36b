// The service the Thrift peer tests call through sofamesh.
namespace py echo

exception NotFound {
  1: string key
}

service Echo {
  string echo(1: string text)
  i64 add(1: i64 a, 2: i64 b)
  string lookup(1: string key) throws (1: NotFound nf)
  oneway void notify(1: string note)
  list<string> notes()
  string slow(1: i32 ms)
}

service Admin {
  string whoami()
}
