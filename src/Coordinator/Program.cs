using MsdFleet.Coordinator;

var app = CoordinatorApp.Build(args);
await app.RunAsync();
