// passport and passport-openidconnect ship no types (and their @types packages are not installed).
declare module 'passport';
declare module 'passport-openidconnect';
